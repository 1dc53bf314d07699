"""``ca-service root sign-arl``: the offline root's one routine duty, signing its ARL."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group("root")
def root() -> None:
    """Offline root CA ceremonies (need the encrypted root key that `init` wrote)."""


def _serial_reason(text: str) -> tuple[int, str]:
    serial, _, reason = text.partition(":")
    try:
        return int(serial, 16), reason or "cACompromise"
    except ValueError:
        raise click.BadParameter(f"{text!r}: give SERIAL (hex) or SERIAL:REASON", param_hint="--revoke") from None


@root.command("sign-arl")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the encrypted root key (default $CA_SERVICE_HOME/offline/root-key.pem)")
@click.option("--days", type=click.IntRange(1, 3660), default=365, show_default=True, help="until nextUpdate")
@click.option("--revoke", "revokes", multiple=True, metavar="SERIAL[:REASON]",
              help="add a CA certificate to the ARL (hex serial; reason default cACompromise), repeatable")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="also write the ARL (DER)")
def sign_arl(key_file: Path | None, days: int, revokes: tuple[str, ...], out_file: Path | None) -> None:
    """Sign a new ARL (the previous entries, plus --revoke) and publish it at /v1/ca/root.crl.

    The passphrase comes from CA_SERVICE_ROOT_PASSPHRASE or a prompt."""
    from datetime import timedelta

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ca_service.cli.common import actor, open_services
    from ca_service.services.root_arl import sign_arl as sign

    entries = tuple(_serial_reason(r) for r in revokes)
    svc = open_services()
    try:
        path = key_file or svc.settings.home / "offline" / "root-key.pem"
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist: bring the root key", param_hint="--key")
        passphrase = os.environ.get("CA_SERVICE_ROOT_PASSPHRASE") or click.prompt(
            "root key passphrase", hide_input=True)
        try:
            key = load_pem_private_key(path.read_bytes(), password=passphrase.encode())
        except (ValueError, TypeError):
            raise click.ClickException(f"cannot open {path}: wrong passphrase or not a PEM key") from None
        row = sign(svc, root_key=key, revoke=entries, lifetime=timedelta(days=days), actor=actor())
        if out_file is not None:
            out_file.write_bytes(row.der)
        click.echo(f"signed ARL number {row.number}: {len(entries)} new entr{'y' if len(entries) == 1 else 'ies'}, "
                   f"next update {row.next_update.isoformat()}; served at /v1/ca/root.crl"
                   + (f"; written to {out_file}" if out_file else ""))
    finally:
        svc.close()
