"""``ca-service evidence verify TYPE EVIDENCE_FILE``: verify one item offline."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ca_service.errors import CAServiceError


@click.group("evidence")
def evidence() -> None:
    """Evidence verification without issuance."""


@evidence.command("verify")
@click.argument("kind")
@click.argument("evidence_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--collateral", "collateral_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at", "at_text", help="RFC 3339 instant to verify at (default now)")
@click.option("--nonce", "nonce_hex", help="hex the report data must start with")
@click.option("--sim-root", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="pin this sim root (PEM or DER) for `sim` evidence")
@click.option("--json", "as_json", is_flag=True)
def verify(kind: str, evidence_file: Path, collateral_files: tuple[Path, ...], at_text: str | None,
           nonce_hex: str | None, sim_root: Path | None, as_json: bool) -> None:
    """Exit 0 iff the evidence is genuine and meets the vendor baseline at --at."""
    from ca_service import evidence as ev
    from ca_service.evidence.trust import DEFAULT_ROOTS

    try:
        at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    except ValueError:
        raise click.BadParameter("not an RFC 3339 time", param_hint="--at") from None
    try:
        nonce = bytes.fromhex(nonce_hex) if nonce_hex else None
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--nonce") from None
    roots = DEFAULT_ROOTS
    if sim_root is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        raw = sim_root.read_bytes()
        cert = x509.load_pem_x509_certificate(raw) if raw.startswith(b"-----") else x509.load_der_x509_certificate(raw)
        roots = roots.with_sim_root(cert.public_bytes(Encoding.DER))
    out: dict[str, object]
    try:
        result = ev.verify(kind, evidence_file.read_bytes(), collateral=[p.read_bytes() for p in collateral_files],
                           at=at, nonce=nonce, roots=roots)
        out = {"ok": True, **result.to_json()}
    except CAServiceError as exc:
        out = {"ok": False, "type": kind, "tcb_status": None, "advisory_ids": [], "claims": {}, "checks": [],
               "error": {"code": exc.code, "detail": exc.detail, **{k: v for k, v in exc.fields.items()
                                                                    if isinstance(v, str | int | list | dict)}}}
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    elif out["ok"]:
        click.echo(f"OK {kind}: tcb_status={out.get('tcb_status')} advisories={out.get('advisory_ids')}")
    else:
        err = out["error"]
        assert isinstance(err, dict)
        click.echo(f"REFUSED {kind}: [{err['code']}] {err['detail']}")
    sys.exit(0 if out["ok"] else 1)
