"""``ca-service demo``: what the CA and the relying parties refuse (issue 13), each one checked to
be refused for the stated reason, with its stable code."""

from __future__ import annotations

import base64
from typing import Any

import click
import requests

from ca_service.cli.demo_story import Story, _last_fail, cli, short


class Unexpected(Exception):
    """A refusal that did not happen, or happened for another reason."""


def _code(resp: requests.Response) -> tuple[int, str | None]:
    try:
        return resp.status_code, resp.json().get("code")
    except ValueError:
        return resp.status_code, None


def other_engine(s: Story) -> bool:
    """Another CVM, certified, whose loader runs a different engine: no loader certificate."""
    from ca_service.agent.client import AgentError, request_certificate
    from ca_service.agent.loader import sim_source
    from ca_service.ca import integrity
    from ca_service.evidence.sim.attester import SimTd
    from ca_service.evidence.sim.eventlog import sim_boot_events

    def run() -> str:
        # another deployment: a TD booted from another image (so another TEE instance), certified as a CVM
        td = SimTd(s.tee, sim_boot_events("ca-service sim CVM image v1 (another deployment)"))
        request_certificate(s.url, "sim", evidence_source=sim_source(td), dns_names=("other.cvm.local",))
        other = integrity.digest_of(b"an engine the vendor never published\n")
        td.measure("engine", other)
        try:
            request_certificate(s.url, "trusted-loader", evidence_source=sim_source(td))
        except AgentError as exc:
            p = exc.problem or {}
            failed = [c.get("claim") for c in p.get("failed_checks", [])]
            if p.get("code") != "appraisal.failed" or failed != ["loader_digests"]:
                raise Unexpected(f"refused for another reason: {p.get('code')} {failed}") from exc
            return f"engine {short(other)} -> 403 appraisal.failed (loader_digests: not in the replayed log)"
        raise Unexpected("a loader running another engine was certified")
    return bool(s.steps.run("a CVM running another engine is refused a loader certificate", run))


def seal_to_cvm(s: Story) -> bool:
    """The lab's seal to a certificate that is not a loader's (the CVM's): no engine in its EAR."""
    def run() -> str:
        d = s.dir("lab")
        p = cli("seal", "--to", str(s.dir("cvm") / "chain.pem"), "--root", str(s.root), "--crl",
                str(s.home / "crl.der"), "--expect", f"engine={s.engine_digest}", "--accept-insecure",
                str(d / "data-key.bin"), str(d / "to-cvm.sealed"))
        if p.returncode == 0 or (d / "to-cvm.sealed").exists():
            raise Unexpected("sealed to a certificate that is not a loader's")
        return "lab: seal --to cvm/chain.pem --expect engine=... -> refused: " + _last_fail(p.stdout).removeprefix(
            "[FAIL] ")
    return bool(s.steps.run("the lab's seal to a certificate that is not a loader's is refused", run))


def revoked(s: Story) -> bool:
    """The operator revokes the CVM certificate: its loader's goes with it, and everything built on it stops."""
    from ca_service.agent.client import AgentError, request_certificate
    from ca_service.agent.loader import sim_source
    from ca_service.agent.simtd import current
    from ca_service.services.revocation import revoke

    def run() -> str:
        revoke(s.svc, s.cvm["serial"], reason="keyCompromise", actor="demo:operator")
        status = requests.get(f"{s.url}/v1/certificates/{s.loader['serial']}", timeout=10).json()["status"]
        if status != "revoked":
            raise Unexpected("the loader's certificate outlived its CVM's")
        return (f"operator revokes CVM certificate {s.cvm['serial']} -> loader certificate {s.loader['serial']} "
                "revoked too")
    if not s.steps.run("revoking the CVM certificate revokes its loader's", run):
        return False

    def seal() -> str:
        d = s.dir("lab")
        (s.home / "crl-now.der").write_bytes(requests.get(f"{s.url}/v1/ca/crl", timeout=10).content)
        p = cli("seal", "--to", str(s.dir("loader") / "chain.pem"), "--root", str(s.root), "--crl",
                str(s.home / "crl-now.der"), "--expect", f"engine={s.engine_digest}", "--accept-insecure",
                str(d / "data-key.bin"), str(d / "to-revoked.sealed"))
        if p.returncode == 0 or "REVOKED" not in p.stdout:
            raise Unexpected("sealed to a revoked certificate")
        return "lab: seal --to loader/chain.pem with today's CRL -> refused: revocation REVOKED"

    def report() -> str:
        resp = requests.post(f"{s.url}/v1/integrity-reports", json=_resigned(s), timeout=10)
        if _code(resp) != (422, "integrity.certificate_revoked"):
            raise Unexpected(f"answered {_code(resp)}")
        return "loader: a new integrity report -> 422 integrity.certificate_revoked"

    def relink() -> str:
        try:
            request_certificate(s.url, "trusted-loader", evidence_source=sim_source(current(s.svc.settings)))
        except AgentError as exc:
            if (exc.problem or {}).get("code") != "loader.cvm_certificate_missing":
                raise Unexpected(f"refused for another reason: {(exc.problem or {}).get('code')}") from exc
            return "loader: a new certificate for the same TD -> 403 loader.cvm_certificate_missing"
        raise Unexpected("a loader was certified without a valid CVM certificate")
    ok = bool(s.steps.run("the lab's seal to a revoked certificate is refused", seal))
    ok = bool(s.steps.run("a revoked loader's report is refused", report)) and ok
    return bool(s.steps.run("no loader certificate without a valid CVM certificate", relink)) and ok


def _resigned(s: Story) -> dict[str, str]:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import serialization

    from ca_service.ca import integrity

    key: Any = serialization.load_pem_private_key((s.dir("loader") / "key.pem").read_bytes(), password=None)
    old = s.signed.report
    rep = integrity.build_report(order_id="demo-order-2", loader_certificate_serial=old.loader_certificate_serial,
                                 issued_at=datetime.now(UTC), components=old.components,
                                 arguments_digest=old.arguments_digest)
    signature, alg = integrity.sign_report(key, rep)
    return {"report": base64.b64encode(rep.raw).decode(), "signature": base64.b64encode(signature).decode(), "alg": alg}


def flow1(s: Story) -> bool:
    """Today's two: evidence bound to another key, and a replayed challenge."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.agent.client import make_csr
    from ca_service.crypto.keys import spki_der
    from ca_service.evidence.binding import binding_value

    def run() -> str:
        ch = requests.post(f"{s.url}/v1/challenges", timeout=10).json()
        key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key, ()).public_bytes(Encoding.PEM).decode()
        wrong = s.tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(other.public_key())))
        body = {"challenge_id": ch["id"], "csr": csr, "policy": "sim",
                "evidence": [{"type": "sim", "data": base64.b64encode(wrong).decode()}]}
        first = requests.post(f"{s.url}/v1/certificates", json=body, timeout=10)
        second = requests.post(f"{s.url}/v1/certificates", json=body, timeout=10)
        codes = (*_code(first), *_code(second))
        if codes != (422, "binding.mismatch", 409, "challenge.consumed"):
            raise Unexpected(f"unexpected answers {codes}")
        return "evidence bound to another key -> 422 binding.mismatch; replayed challenge -> 409 challenge.consumed"
    return bool(s.steps.run("another key, a replayed challenge", run))


REFUSALS = (other_engine, seal_to_cvm, revoked, flow1)


def explain() -> None:
    click.echo("\nWhat this shows, and what it does not:")
    click.echo("  - ear.status is 'warning' for every sim certificate: the sim TEE is software, no hardware vouches\n"
               "    for it (AR4SI hardware claim 32), and its certificates say INSECURE-DEV. A relying party accepts\n"
               "    them only with --accept-insecure; production refuses sim evidence outright.")
    click.echo("  - the anchor is on the embedded chain, a local chain kept in the CA's home (chain/): it shows\n"
               "    the CA committed to this log checkpoint in a contract that only grows, and the auditor's proof\n"
               "    matches it. Nobody outside saw that chain and whoever holds the file could rewrite it; on a real\n"
               "    chain (CA_SERVICE_CHAIN_RPC) the same check shows the log state was public by that block. An\n"
               "    anchor never proves the evidence true.")
