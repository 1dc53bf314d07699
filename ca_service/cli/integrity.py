"""``ca-service integrity sign|submit|verify``: the loader's and the relying party's side of flow 2."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ca_service.ca import integrity as pure
from ca_service.errors import CAServiceError


@click.group("integrity")
def integrity() -> None:
    """Integrity reports: a trusted loader signs the list of what it loaded; the CA logs it."""


def _component(text: str, digest_alg: str) -> pure.Component:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise click.BadParameter(f"{text!r}: expected NAME=PATH or NAME=<alg>:<hex>", param_hint="--component")
    if re.fullmatch(pure.DIGEST_PATTERN, value):
        return pure.Component(name, value)
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value!r} is neither a file nor a sha256:/sha384:/sha512: digest",
                                 param_hint="--component")
    return pure.Component(name, pure.digest_of(path.read_bytes(), digest_alg))


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter("not an unencrypted PEM private key", param_hint="--key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise click.BadParameter("only EC P-256/P-384 and Ed25519 keys sign reports", param_hint="--key")
    return key


@integrity.command("sign")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the loader's private key (PEM), e.g. key.pem from `agent request`")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the loader's certificate chain (PEM, leaf first), e.g. chain.pem")
@click.option("--order-id", required=True)
@click.option("--component", "components", multiple=True, required=True,
              help="NAME=PATH (digest of the file) or NAME=sha384:<hex>; repeatable, in load order")
@click.option("--arguments", "arguments", default="", help="the arguments the loader ran with (digest of UTF-8)")
@click.option("--arguments-digest", help="or the arguments' digest directly (<alg>:<hex>)")
@click.option("--digest-alg", default="sha384", type=click.Choice(sorted(pure.DIGEST_ALGS)),
              help="digest for files and arguments")
@click.option("--issued-at", "issued_at_text", help="RFC 3339 time of the report (default now)")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
def sign(key_file: Path, cert_file: Path, order_id: str, components: tuple[str, ...], arguments: str,
         arguments_digest: str | None, digest_alg: str, issued_at_text: str | None, out_file: Path) -> None:
    """Build the canonical report of what was loaded, sign it with the loader's key, write report.json."""
    key = _load_key(key_file)
    chain = tuple(x509.load_pem_x509_certificates(cert_file.read_bytes()))
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, pub)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise click.BadParameter("the key is not the certificate's key", param_hint="--key")
    issued_at = datetime.fromisoformat(issued_at_text.replace("Z", "+00:00")) if issued_at_text else datetime.now(UTC)
    report = pure.build_report(
        order_id=order_id, loader_certificate_serial=leaf.serial_number, issued_at=issued_at,
        components=[_component(c, digest_alg) for c in components],
        arguments_digest=arguments_digest or pure.digest_of(arguments.encode(), digest_alg))
    signature, alg = pure.sign_report(key, report)
    signed = pure.SignedReport(report=report, signature=signature, alg=alg, chain=chain)
    out_file.write_text(json.dumps(signed.to_file_json(), indent=2) + "\n")
    click.echo(f"report sha256 {report.sha256} ({len(report.components)} components, {alg}) -> {out_file}")


@integrity.command("submit")
@click.option("--server", required=True, help="CA base URL, e.g. http://127.0.0.1:8080")
@click.argument("report_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def submit(server: str, report_file: Path) -> None:
    """POST a signed report; prints {id, sha256, log_index, serial}."""
    import requests

    signed = pure.load_signed_report(report_file.read_bytes())
    url = f"{server.rstrip('/')}/v1/integrity-reports"
    try:
        resp = requests.post(url, json=signed.post_body(), timeout=30)
    except requests.RequestException as exc:
        click.echo(f"error: cannot reach {url}: {type(exc).__name__}", err=True)
        sys.exit(1)
    try:
        data: dict[str, Any] = resp.json()
    except ValueError:
        click.echo(f"error: {url} answered {resp.status_code} without JSON", err=True)
        sys.exit(1)
    if resp.status_code not in (200, 201):
        click.echo(f"refused: [{data.get('code')}] {data.get('detail')}", err=True)
        sys.exit(1)
    click.echo(json.dumps(data))


@integrity.command("verify")
@click.argument("report_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", "root_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the CA root you trust (PEM)")
@click.option("--proof", "proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the report's tlog-proof@v1 bundle (or the JSON of GET /v1/integrity-reports/{id})")
@click.option("--log-vkey", help="the log's note verifier key (GET /v1/log/vkey, kept by you); with --proof")
@click.option("--at", "at_text", help="RFC 3339 time to verify at (default now)")
@click.option("--rpc", help="EVM JSON-RPC URL: check the on-chain anchor of the proof's checkpoint (needs --proof); "
                            "'embedded': the CA's local chain in CA_SERVICE_HOME (demo and development only)")
@click.option("--contract", envvar="CA_SERVICE_ANCHOR_CONTRACT",
              help="pin the anchor contract address (default: $CA_SERVICE_ANCHOR_CONTRACT, else asked of --server "
                   "and reported as a warning)")
@click.option("--server", help="the CA's base URL: the anchor contract when not pinned, and a consistency proof when "
                               "the anchored checkpoint is not the proof's")
@click.option("--json", "as_json", is_flag=True)
def verify(report_file: Path, root_file: Path, proof_file: Path | None, log_vkey: str | None, at_text: str | None,
           rpc: str | None, contract: str | None, server: str | None, as_json: bool) -> None:
    """Offline: the report's signature by its certificate, the chain to the root, and its log inclusion;
    with --rpc, the anchor of the checkpoint that includes it."""
    if proof_file is not None and not log_vkey:
        raise click.UsageError("--proof needs --log-vkey")
    if rpc is not None and proof_file is None:
        raise click.UsageError("--rpc needs --proof (the anchor is checked for the proof's checkpoint)")
    at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else datetime.now(UTC)
    root = x509.load_pem_x509_certificate(root_file.read_bytes())
    checks: list[dict[str, Any]] = []

    def check(name: str, fn: Any) -> bool:
        try:
            detail = fn()
        except CAServiceError as exc:
            checks.append({"name": name, "passed": False, "detail": f"[{exc.code}] {exc.detail}"})
            return False
        checks.append({"name": name, "passed": True, "detail": detail})
        return True

    class Steps:  # what the anchor check of ca_service.relying_party.transparency adds its steps to
        def add(self, name: str, passed: bool, detail: str = "") -> bool:
            checks.append({"name": name, "passed": passed, "detail": detail})
            return passed

        def note(self, name: str, state: str, detail: str) -> None:
            checks.append({"name": name, "passed": True, "state": state, "detail": detail})

    box: dict[str, Any] = {}

    def load() -> str:
        box["s"] = pure.load_signed_report(report_file.read_bytes())
        r = box["s"].report
        return f"order {r.order_id}, {len(r.components)} components, sha256 {r.sha256}"

    def signature() -> str:
        pure.verify_signed_report(box["s"], root, at)
        return f"{box['s'].alg} by certificate {box['s'].report.loader_certificate_serial}, chain to the root"

    def inclusion(proof: Path, vkey: str) -> str:
        text = proof.read_text()
        if text.lstrip().startswith("{"):  # the JSON of GET /v1/integrity-reports/{id}
            try:
                text = json.loads(text).get("proof") or ""
            except (ValueError, AttributeError):
                text = ""
        cp = pure.check_report_proof(box["s"].report, text, vkey)
        box["proof"] = (cp, text)
        return f"logged leaf included in the signed checkpoint of size {cp.size}"

    def anchored(rpc: str, vkey: str) -> None:
        from ca_service.cli.proofcheck import open_chain
        from ca_service.relying_party.revocation import requests_fetcher
        from ca_service.relying_party.transparency import LogTrust, check_anchored

        steps = Steps()
        chain = open_chain(steps, rpc)
        if chain is not None:
            cp, text = box["proof"]
            check_anchored(steps, LogTrust(vkey, chain, contract), cp, text, fetch=requests_fetcher(),
                           server=server.rstrip("/") if server else None)

    if check("report", load) and check("signature", signature) and proof_file is not None and log_vkey:
        if check("log_inclusion", lambda: inclusion(proof_file, log_vkey)) and rpc is not None:
            anchored(rpc, log_vkey)
    ok = bool(checks) and all(c["passed"] for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": checks}, indent=2))
    else:
        for c in checks:
            mark = c.get("state") or ("ok" if c["passed"] else "FAIL")
            click.echo(f"[{mark}] {c['name']}: {c['detail']}")
        click.echo("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)
