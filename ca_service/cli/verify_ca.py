"""``ca-service verify-ca --server URL``: check the CA's own attestation (a thin shell over
``ca_service.relying_party.ca_attestation``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _load_cert(path: Path, hint: str) -> Any:
    from cryptography import x509

    raw = path.read_bytes()
    try:
        return x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw)
    except ValueError:
        raise click.BadParameter(f"{path} is not a PEM or DER certificate", param_hint=hint) from None


@click.command("verify-ca")
@click.option("--server", required=True, help="the CA's base URL (http(s)://host:port)")
@click.option("--root", "root_file", type=_FILE,
              help="the CA root you trust (PEM); default $CA_SERVICE_HOME/root.pem")
@click.option("--expect", "expects", multiple=True, metavar="KEY=VALUE",
              help="an expectation on the CA's evidence claims, repeatable (tee=tdx, mrtd=HEX, ...)")
@click.option("--collateral", "collateral_files", multiple=True, type=_FILE,
              help="vendor collateral for the CA's evidence (else what the CA sends; all verified to pinned roots)")
@click.option("--sim-root", "sim_root_file", type=_FILE,
              help="pin the insecure-dev CA's sim TEE root (written by init as $CA_SERVICE_HOME/sim-root.pem)")
@click.option("--accept-insecure", is_flag=True, help="accept a CA of the insecure-dev profile (sim evidence)")
@click.option("--at", "at_text", help="RFC 3339 time to verify at (default now)")
@click.option("--json", "as_json", is_flag=True)
def verify_ca(server: str, root_file: Path | None, expects: tuple[str, ...], collateral_files: tuple[Path, ...],
              sim_root_file: Path | None, accept_insecure: bool, at_text: str | None, as_json: bool) -> None:
    """Fetch /v1/ca/attestation with a fresh nonce and check: the issuing CA chains to the root, the
    evidence is genuine, it is bound to that nonce and the issuing CA's key, and every --expect.
    Exit 0 only when every check passed."""
    from ca_service.cli.verify import _print, _time
    from ca_service.config import Settings
    from ca_service.errors import CAServiceError
    from ca_service.relying_party.ca_attestation import (
        CaAttestation,
        fetch_ca_attestation,
        fresh_nonce,
        verify_ca_attestation,
    )
    from ca_service.relying_party.expect import Expectation
    from ca_service.relying_party.revocation import requests_fetcher
    from ca_service.relying_party.transparency import _why

    if not server.startswith(("http://", "https://")):
        raise click.BadParameter("give an http(s) URL", param_hint="--server")
    at = _time(at_text)
    try:
        expectations = [Expectation.parse(e) for e in expects]
    except CAServiceError as exc:
        raise click.BadParameter(exc.detail, param_hint="--expect") from None
    root_path = root_file or Settings.from_env().home / "root.pem"
    if not root_path.exists():
        raise click.BadParameter(f"{root_path} does not exist: pass the root you trust", param_hint="--root")
    root = _load_cert(root_path, "--root")
    sim_root = _load_cert(sim_root_file, "--sim-root") if sim_root_file else None
    nonce = fresh_nonce()
    try:
        doc = fetch_ca_attestation(server, nonce, requests_fetcher())
    except Exception as exc:  # transport, HTTP status or JSON: one line, exit 1
        click.echo(f"verify-ca: could not fetch {server}/v1/ca/attestation: {_why(exc)}", err=True)
        sys.exit(1)
    try:
        att = CaAttestation.parse(doc)
    except ValueError as exc:
        click.echo(f"verify-ca: {exc}", err=True)
        sys.exit(1)
    verdict = verify_ca_attestation(att, root, nonce=nonce, at=at, sim_root=sim_root,
                                    collateral=[p.read_bytes() for p in collateral_files],
                                    expectations=expectations, accept_insecure=accept_insecure)
    _print(verdict, as_json)
    sys.exit(0 if verdict.ok else 1)
