"""``ca-service verify CERT``, ``seal`` and ``unseal``: the relying party's CLI (a thin shell over
``ca_service.relying_party``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 time (for example 2026-03-01T12:00:00Z)",
                                 param_hint="--at") from None
    if at.tzinfo is None:
        raise click.BadParameter("give a time zone (Z or +hh:mm)", param_hint="--at")
    return at.astimezone(UTC)


def _certs(path: Path, what: str) -> list[Any]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        raise click.BadParameter(f"{path} is not a PEM certificate file", param_hint=what) from None
    return certs


def _verify_options(f: Any) -> Any:
    opts = [
        click.option("--root", "root_file", type=_FILE,
                     help="the CA root you trust (PEM); default $CA_SERVICE_HOME/root.pem"),
        click.option("--at", "at_text", help="RFC 3339 time to verify at (default now)"),
        click.option("--expect", "expects", multiple=True, metavar="KEY=VALUE",
                     help="an expectation on the EAR, repeatable (docs/relying-party.md lists the names)"),
        click.option("--crl", "crl_file", type=_FILE, help="check revocation offline against this CRL (DER/PEM)"),
        click.option("--ocsp-response", "ocsp_file", type=_FILE, help="check revocation offline: an OCSP response"),
        click.option("--no-revocation", is_flag=True, help="skip the revocation check (reported as a warning)"),
        click.option("--accept-insecure", is_flag=True, help="accept certificates of the insecure-dev profile"),
        click.option("--accept-warning", is_flag=True, help="accept an EAR status of warning (names what fell short)"),
        click.option("--log-vkey", help="the log's note verifier key (name+id+key, from GET /v1/log/vkey, kept by "
                                        "you): check the certificate's log inclusion"),
        click.option("--rpc", help="EVM JSON-RPC URL: check the on-chain anchor covering the certificate "
                                   "(needs --log-vkey); 'embedded': the CA's local chain in CA_SERVICE_HOME "
                                   "(demo and development only)"),
        click.option("--contract", envvar="CA_SERVICE_ANCHOR_CONTRACT",
                     help="pin the anchor contract address (default: $CA_SERVICE_ANCHOR_CONTRACT, else asked of the "
                          "CA and reported as a warning)"),
        click.option("--proof", "proof_file", type=_FILE,
                     help="a tlog-proof@v1 bundle for the certificate (default: fetched from the CA)"),
        click.option("--server", help="the CA's base URL for proofs (default: from the certificate's AIA)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def run_verify(chain_file: Path, *, root_file: Path | None, at_text: str | None, expects: tuple[str, ...],
               crl_file: Path | None, ocsp_file: Path | None, no_revocation: bool, accept_insecure: bool,
               accept_warning: bool, proof_file: Path | None, log_vkey: str | None, rpc: str | None,
               contract: str | None, server: str | None) -> Any:
    from ca_service.config import Settings
    from ca_service.errors import CAServiceError
    from ca_service.relying_party import Expectation, verify_certificate
    from ca_service.relying_party.revocation import requests_fetcher

    at = _time(at_text)
    try:
        expectations = [Expectation.parse(e) for e in expects]
    except CAServiceError as exc:
        raise click.BadParameter(exc.detail, param_hint="--expect") from None
    chain = _certs(chain_file, "CERT")
    root_path = root_file or Settings.from_env().home / "root.pem"
    if not root_path.exists():
        raise click.BadParameter(f"{root_path} does not exist: pass the root you trust", param_hint="--root")
    root = _certs(root_path, "--root")[0]
    if no_revocation and (crl_file or ocsp_file):
        raise click.UsageError("--no-revocation and --crl/--ocsp-response contradict each other")
    mode = "skip" if no_revocation else ("offline" if (crl_file or ocsp_file) else "online")
    verdict = verify_certificate(chain, root, at=at, expectations=expectations, revocation=mode,
                                 crl=crl_file.read_bytes() if crl_file else None,
                                 ocsp_response=ocsp_file.read_bytes() if ocsp_file else None,
                                 fetch=requests_fetcher(), accept_insecure=accept_insecure,
                                 accept_warning=accept_warning)
    if (proof_file or log_vkey or rpc) and verdict.certificate is not None:
        from ca_service.cli.proofcheck import check_proof

        check_proof(verdict, verdict.certificate, proof_file.read_text() if proof_file else None, log_vkey, rpc,
                    contract, server=server, fetch=requests_fetcher())
    return verdict


def _print(verdict: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2, default=str))
        return
    marks = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
    for s in verdict.steps:
        click.echo(f"[{marks[s.state]}] {s.name}: {s.detail}")
    click.echo("PASS" if verdict.ok else "FAIL")


@click.command("verify")
@click.argument("cert_file", type=_FILE)
@_verify_options
@click.option("--json", "as_json", is_flag=True)
def verify(cert_file: Path, as_json: bool, **kw: Any) -> None:
    """Verify a certificate chain (leaf first): chain to a pinned root, revocation, profile, EAR status,
    expectations, and its log proof. Exit 0 only when every check passed."""
    verdict = run_verify(cert_file, **kw)
    _print(verdict, as_json)
    sys.exit(0 if verdict.ok else 1)


@click.command("seal")
@click.option("--to", "to_file", type=_FILE, required=True, help="the recipient's certificate chain (PEM, leaf first)")
@_verify_options
@click.argument("in_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_file", type=click.Path(dir_okay=False, path_type=Path))
def seal(to_file: Path, in_file: Path, out_file: Path, **kw: Any) -> None:
    """Verify the recipient certificate exactly as `verify` does, then encrypt IN to its key (HPKE)."""
    from ca_service.errors import CAServiceError
    from ca_service.relying_party import seal_verified

    verdict = run_verify(to_file, **kw)
    _print(verdict, False)
    if not verdict.ok or verdict.certificate is None:
        click.echo("seal: refused: the recipient certificate did not pass every check; nothing was written", err=True)
        sys.exit(1)
    tmp = out_file.with_name(out_file.name + ".part")
    try:
        with in_file.open("rb") as src, tmp.open("wb") as dst:
            seal_verified(verdict, src, dst)
        tmp.replace(out_file)
    except CAServiceError as exc:
        tmp.unlink(missing_ok=True)
        click.echo(f"seal: refused [{exc.code}]: {exc.detail}", err=True)
        sys.exit(1)
    click.echo(f"sealed {in_file} to certificate {format(verdict.certificate.serial_number, 'x')} -> {out_file}")


@click.command("unseal")
@click.option("--key", "key_file", type=_FILE, required=True, help="the recipient's private key (PEM)")
@click.argument("in_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_file", type=click.Path(dir_okay=False, path_type=Path))
def unseal(key_file: Path, in_file: Path, out_file: Path) -> None:
    """Decrypt a file sealed to this key; nothing is written unless every byte authenticates."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ca_service.errors import CAServiceError
    from ca_service.relying_party import unseal as open_sealed

    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise click.BadParameter(f"{key_file} is not an unencrypted PEM private key", param_hint="--key") from None
    tmp = out_file.with_name(out_file.name + ".part")
    try:
        with in_file.open("rb") as src, tmp.open("wb") as dst:
            serial = open_sealed(key, src, dst)
        tmp.replace(out_file)
    except CAServiceError as exc:
        tmp.unlink(missing_ok=True)
        click.echo(f"unseal: failed [{exc.code}]: {exc.detail}", err=True)
        sys.exit(1)
    click.echo(f"unsealed {in_file} (sealed to certificate {serial}) -> {out_file}")
