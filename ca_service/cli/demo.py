"""``ca-service demo``: the whole story on the embedded default, printing each step.

A fresh CA (insecure-dev profile, SQLite, in-process chain) serves on a loopback port; a CVM agent
boots on the sim TEE and gets a certificate; a relying party verifies it against the root alone,
then the demo shows the refusals a replay and a mis-bound evidence get. Exit 0 iff every check passed.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import requests
from cryptography import x509

from ca_service.config import Settings


class Steps:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.results.append((name, passed))
        mark = click.style("PASS", fg="green") if passed else click.style("FAIL", fg="red")
        click.echo(f"  [{mark}] {name}" + (f": {detail}" if detail else ""))
        return passed

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
        except Exception as exc:  # the demo reports every failure as a failed step
            return self.check(name, False, f"{type(exc).__name__}: {exc}")
        return self.check(name, True, detail)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok in self.results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(app: Any, port: int) -> Any:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@click.command("demo")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), help="keep the demo CA here")
@click.option("--serve", is_flag=True, help="keep the server up afterwards and print the explorer's URL (Ctrl-C stops)")
def demo(home: Path | None, serve: bool) -> None:
    """Run the whole issuance story end to end and verify it."""
    warnings.simplefilter("ignore")
    tmp = None
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="ca-service-demo-"))
        home = tmp
    try:
        ok = _run(home, serve=serve)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    click.echo(click.style("demo: every check passed", fg="green") if ok else click.style("demo: FAILED", fg="red"))
    sys.exit(0 if ok else 1)


def _run(home: Path, *, serve: bool = False) -> bool:
    from ca_service.agent.client import AgentError, make_csr, request_certificate, write_result
    from ca_service.api.app import create_app
    from ca_service.ca.verify import verify_certificate
    from ca_service.crypto.keys import spki_der
    from ca_service.services.bootstrap import init_ca, load_sim_tee
    from ca_service.services.container import Services

    steps = Steps()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings.from_env(home=home, profile="insecure-dev", public_url=url, database_url="",
                                 chain_rpc="embedded")
    click.echo(f"1. operator: initialise a CA in {home} (profile insecure-dev, SQLite, embedded chain)")
    steps.run("ca-service init", lambda: "; ".join(init_ca(settings).notes))
    svc = Services.create(settings)
    app = create_app(services=svc)
    server = _serve(app, port)
    try:
        click.echo(f"2. the API serves on {url}")
        steps.run("GET /readyz", lambda: requests.get(f"{url}/readyz", timeout=10).json()["status"])

        click.echo("3. a CVM boots on the sim TEE and asks for a certificate (flow 1)")
        tee = load_sim_tee(settings)
        out = home / "agent"
        result: dict[str, Any] = {}

        def agent() -> str:
            r = request_certificate(url, "sim", evidence_source=lambda rd: ("sim", tee.report(rd)),  # type: ignore[attr-defined]
                                    dns_names=("trainer.cvm.local",))
            write_result(r, out)
            result["r"] = r
            return (f"serial {r.response['serial']}, policy {r.response['policy']['id']}, "
                    f"log index {r.response['log_index']}")
        if not steps.run("agent request --sim", agent):
            return False
        r = result["r"]

        click.echo("4. a relying party checks the certificate with the root alone")
        root_pem = (home / "root.pem").read_bytes()
        root = x509.load_pem_x509_certificate(root_pem)
        chain = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
        report = verify_certificate(chain, root, datetime.now(UTC), accept_insecure=True)
        for c in report.checks:
            steps.check(f"certificate {c.name}", c.passed, c.detail)
        ear = report.ear or {}
        sub = ear.get("submods", {}).get("sim", {})
        from ca_service.evidence.sim.attester import default_measurement

        mrtd = sub.get("ca-service.measurements", {}).get("mrtd")
        steps.check("EAR names the policy, the TEE's MRTD and the log index",
                    sub.get("ear.appraisal-policy-id") == r.response["policy"]["id"]
                    and mrtd == default_measurement("mrtd").hex()
                    and ear.get("ca-service.log-index") == r.response["log_index"],
                    f"status {ear.get('ear.status')}, mrtd {str(mrtd)[:16]}...")
        if shutil.which("openssl"):
            (home / "leaf.pem").write_bytes(chain[0].public_bytes(_pem()))
            (home / "issuing.pem").write_bytes(chain[1].public_bytes(_pem()))
            p = subprocess.run(["openssl", "verify", "-CAfile", str(home / "root.pem"), "-untrusted",
                                str(home / "issuing.pem"), str(home / "leaf.pem")], capture_output=True, text=True)
            steps.check("openssl verify", p.returncode == 0, p.stdout.strip() or p.stderr.strip())
        for extra in _extra_steps():
            extra(steps, url, r.response, home, svc)

        click.echo("7. what the CA refuses")

        def replay() -> str:
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.serialization import Encoding

            from ca_service.evidence.binding import binding_value
            ch = requests.post(f"{url}/v1/challenges", timeout=10).json()
            key = ec.generate_private_key(ec.SECP256R1())
            other = ec.generate_private_key(ec.SECP256R1())
            csr = make_csr(key, ()).public_bytes(Encoding.PEM).decode()
            wrong = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(other.public_key())))  # type: ignore[attr-defined]
            body = {"challenge_id": ch["id"], "csr": csr, "policy": "sim",
                    "evidence": [{"type": "sim", "data": base64.b64encode(wrong).decode()}]}
            first = requests.post(f"{url}/v1/certificates", json=body, timeout=10)
            second = requests.post(f"{url}/v1/certificates", json=body, timeout=10)
            codes = (first.status_code, first.json().get("code"), second.status_code, second.json().get("code"))
            if codes != (422, "binding.mismatch", 409, "challenge.consumed"):
                raise AgentError(f"unexpected answers {codes}")
            return "evidence bound to another key -> 422 binding.mismatch; replayed challenge -> 409 challenge.consumed"
        steps.run("refusals", replay)
        if serve:
            _hold(url, r.response["serial"], steps.passed)
    finally:
        server.shutdown()
        svc.close()
    return steps.passed


def _hold(url: str, serial: str, passed: bool) -> None:
    """``--serve``: keep the demo CA up for a newcomer to browse, until Ctrl-C."""
    import time

    click.echo(click.style("demo: every check passed", fg="green") if passed else click.style("demo: FAILED", fg="red"))
    click.echo(f"\nThe explorer: {url}/  (the demo's certificate: {url}/certificates/{serial})")
    click.echo("Follow it to its policy, its log entry and its anchor. The API is under the same URL. Ctrl-C stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped")


def _pem() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def _extra_steps() -> list[Callable[[Steps, str, dict[str, Any], Path, Any], None]]:
    """Relying-party steps past the certificate itself: the log proof, then the chain anchor."""
    return [_log_and_anchor, _integrity_report]


def _log_and_anchor(steps: Steps, url: str, response: dict[str, Any], home: Path, svc: Any) -> None:

    from ca_service.ca.verify import CertificateReport, check_log_proof
    from ca_service.cli.proofcheck import check_anchor
    from ca_service.services.anchoring import anchor_matches_chain, anchor_now, chain_for
    from ca_service.services.log import publish_checkpoint

    click.echo("5. the log: a signed checkpoint covers the issuance; the relying party checks inclusion")
    steps.run("publish checkpoint", lambda: f"size {publish_checkpoint(svc).size}")  # type: ignore[union-attr]
    click.echo("6. the chain: the checkpoint is anchored on the embedded EVM chain")
    view_box: dict[str, Any] = {}

    def anchor() -> str:
        view = anchor_now(svc)
        view_box["v"] = view
        return f"size {view.size} in block {view.block_number} of chain {view.chain_id}, contract {view.contract}"
    steps.run("anchor", anchor)
    vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
    bundle = requests.get(f"{url}/v1/certificates/{response['serial']}/proof", timeout=10).text
    (home / "proof.txt").write_text(bundle)
    leaf = x509.load_pem_x509_certificates(response["certificate_chain"].encode())[0]
    report = CertificateReport()
    cp = check_log_proof(report, leaf, bundle, vkey)
    view = view_box.get("v")
    if cp is not None and view is not None:
        chain = chain_for(svc)
        if check_anchor(report, chain, view.contract, cp, bundle.partition("\n\n")[2]):
            report.add("anchor record", anchor_matches_chain(chain, view),
                       "GET /v1/anchors names this transaction, block and contract")
    elif view is None:
        report.add("anchor", False, "no anchor")
    for c in report.checks:
        steps.check(c.name, c.passed, c.detail)


def _integrity_report(steps: Steps, url: str, response: dict[str, Any], home: Path, svc: Any) -> None:
    """Flow 2: the certified key signs an integrity report; the CA logs it; the relying party checks it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from ca_service.ca import integrity
    from ca_service.services.log import publish_checkpoint

    click.echo("6b. the CVM's loader signs an integrity report of what it loaded; the CA logs it")
    box: dict[str, Any] = {}

    def sign_and_submit() -> str:
        key = serialization.load_pem_private_key((home / "agent" / "key.pem").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise RuntimeError("the agent's key cannot sign integrity reports")
        chain = tuple(x509.load_pem_x509_certificates((home / "agent" / "chain.pem").read_bytes()))
        report = integrity.build_report(
            order_id="demo-order-1", loader_certificate_serial=response["serial"], issued_at=datetime.now(UTC),
            components=[integrity.Component("engine", integrity.digest_of(b"demo training engine v1")),
                        integrity.Component("dataset/clinic-a", integrity.digest_of(b"clinic-a records", "sha256"))],
            arguments_digest=integrity.digest_of(b"--epochs 3"))
        signature, alg = integrity.sign_report(key, report)
        signed = integrity.SignedReport(report=report, signature=signature, alg=alg, chain=chain)
        resp = requests.post(f"{url}/v1/integrity-reports", json=signed.post_body(), timeout=10)
        if resp.status_code != 201:
            raise RuntimeError(f"refused: {resp.status_code} {resp.json().get('code')}")
        box["signed"], box["out"] = signed, resp.json()
        return f"report {report.sha256[:16]}... ({alg}) at log index {box['out']['log_index']}"
    if not steps.run("POST /v1/integrity-reports", sign_and_submit):
        return
    steps.run("publish checkpoint", lambda: f"size {publish_checkpoint(svc).size}")  # type: ignore[union-attr]

    def relying_party() -> str:
        signed = box["signed"]
        root = x509.load_pem_x509_certificate((home / "root.pem").read_bytes())
        integrity.verify_signed_report(signed, root, datetime.now(UTC))
        rec = requests.get(f"{url}/v1/integrity-reports/{box['out']['id']}", timeout=10).json()
        if base64.b64decode(rec["report"]) != signed.report.raw or not rec["proof"]:
            raise RuntimeError("the stored report or its proof is missing")
        vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
        cp = integrity.check_report_proof(signed.report, rec["proof"], vkey)
        return (f"signature by the certified key, chain to the root, leaf {rec['log_index']} included in the "
                f"signed checkpoint of size {cp.size}")
    steps.run("relying party checks the report and its inclusion proof", relying_party)
