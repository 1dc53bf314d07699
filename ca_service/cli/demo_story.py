"""``ca-service demo``, the three-party story (DESIGN.md "Who uses it", flow 2; issue 13).

A model vendor publishes its engine's digest; a CVM boots on the INSECURE sim TEE and is
certified; its trusted loader measures the engine and is certified in turn, linked to the CVM's
certificate; a lab and a clinic each check that certificate alone, offline, with ``ca-service
verify --expect engine=...`` and seal their data keys to it; the loader unseals both and signs an
integrity report; the CA logs and anchors it; an auditor re-verifies the report, its inclusion
proof and the anchor. Each step names its party and holds or fails on its own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click
import requests
from cryptography import x509

ENGINE = b"ca-service demo training engine v1\n"
ARGUMENTS = "--epochs 3 --lr 0.001"
DATASETS = {"lab": b"lab: 1,204 de-identified pathology slides\n", "clinic": b"clinic: 873 de-identified ECG records\n"}


@dataclass
class Story:
    """What the steps share: the CA, the parties' directories and what each step produced."""

    steps: Any
    url: str
    home: Path
    svc: Any
    tee: Any
    engine_digest: str = ""
    cvm: Any = None
    loader: Any = None
    sealed: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    signed: Any = None
    record: dict[str, Any] = field(default_factory=dict)
    anchor: Any = None

    def dir(self, party: str) -> Path:
        d = self.home / "parties" / party
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def root(self) -> Path:
        return self.home / "root.pem"


def cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ca-service ARGS`` as its user would, in a fresh process with no CA settings (but
    CA_SERVICE_HOME=``home``, where the embedded chain is read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")} | {"PYTHONWARNINGS": "ignore"}
    if home is not None:
        env["CA_SERVICE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "ca_service.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def say(party: str, text: str) -> None:
    click.echo(f"   {click.style(party, bold=True)}: {text}")


def short(digest: str) -> str:
    alg, _, hexd = digest.partition(":")
    return f"{alg}:{hexd[:12]}..." if hexd else digest[:16] + "..."


def step1_vendor(s: Story) -> bool:
    from ca_service.agent.loader import file_digest
    from ca_service.services import policies

    click.echo("1. A model vendor publishes its engine's digest; the CA operator admits loaders running it")
    engine = s.dir("vendor") / "engine.img"
    engine.write_bytes(ENGINE)
    s.engine_digest = file_digest(engine)
    say("model vendor", f"publishes engine.img, {s.engine_digest}")

    def operator() -> str:
        source = resources.files("ca_service.data").joinpath("trusted-loader.yaml").read_text()
        ref, _ = policies.apply_policy(s.svc, source, actor="demo:operator")
        policies.activate(s.svc, ref.policy.name, ref.version, actor="demo:operator")
        listed = ref.policy.rules("sim").get("loader_digests", [])
        if s.engine_digest not in listed:
            raise RuntimeError(f"policy {ref.id} does not list the vendor's digest")
        return f"policy trusted-loader@{ref.version} lists {short(s.engine_digest)} under loader_digests"
    return bool(s.steps.run("operator applies and activates policies/trusted-loader.yaml", operator))


def step2_cvm(s: Story) -> bool:
    from ca_service.agent import simtd
    from ca_service.agent.client import request_certificate, write_result
    from ca_service.agent.loader import sim_source

    click.echo("2. A CVM boots (sim TEE) and is certified (flow 1)")

    def cvm() -> str:
        td = simtd.boot(s.svc.settings)
        r = request_certificate(s.url, "sim", evidence_source=sim_source(td), dns_names=("trainer.cvm.local",))
        write_result(r, s.dir("cvm"))
        s.cvm = r.response
        boot = ", ".join(e.event for e in td.events)
        return (f"certificate {r.response['serial']} under {r.response['policy']['id'].split('#')[0]}, "
                f"log index {r.response['log_index']}; its event log ({boot}) replays to RTMR0-3")
    return bool(s.steps.run("CVM agent: agent request --sim", cvm))


def step3_loader(s: Story) -> bool:
    from ca_service.agent import simtd
    from ca_service.agent.client import request_certificate, write_result
    from ca_service.agent.loader import Measured, measure_into, sim_source
    from ca_service.ca import integrity
    from ca_service.ca.loader_ext import cvm_reference

    click.echo("3. Its trusted loader measures the engine into RTMR3 and gets its own certificate")

    def loader() -> str:
        td = simtd.current(s.svc.settings)
        args = integrity.digest_of(ARGUMENTS.encode())
        measure_into(td, [Measured("engine", s.engine_digest), Measured("args", args)])
        simtd.save(td, simtd.state_file(s.svc.settings))
        r = request_certificate(s.url, "trusted-loader", evidence_source=sim_source(td))
        write_result(r, s.dir("loader"))
        s.loader = r.response
        leaf = x509.load_pem_x509_certificates(r.chain_pem.encode())[0]
        ref, ear = cvm_reference(leaf), r.response["ear"]
        sub = ear["submods"]["sim"]
        if ref is None or ref.serial != s.cvm["serial"] or ear.get("ca-service.cvm-serial") != s.cvm["serial"]:
            raise RuntimeError("the loader certificate does not name the CVM's certificate")
        if sub.get("ca-service.engine") != s.engine_digest:
            raise RuntimeError("the EAR does not carry the measured engine")
        return (f"certificate {r.response['serial']} under trusted-loader, linked to CVM certificate {ref.serial} "
                f"(EAR and extension); replayed log shows engine {short(sub['ca-service.engine'])}")
    return bool(s.steps.run("loader: agent loader-request --sim --component engine=engine.img", loader))


def step4_data_owners(s: Story) -> bool:
    click.echo("4. A lab and a clinic each check the loader's certificate alone, offline, and seal a data key to it")
    chain = s.dir("loader") / "chain.pem"
    crl = s.home / "crl.der"
    crl.write_bytes(requests.get(f"{s.url}/v1/ca/crl", timeout=10).content)
    ok = True
    for party in DATASETS:
        d = s.dir(party)
        s.keys[party] = secrets.token_bytes(32)
        (d / "data-key.bin").write_bytes(s.keys[party])
        args = ["--root", str(s.root), "--crl", str(crl), "--expect", f"engine={s.engine_digest}",
                "--expect", "policy=trusted-loader", "--accept-insecure"]

        def verify_and_seal(d: Path = d, args: list[str] = args, party: str = party) -> str:
            v = cli("verify", str(chain), *args)
            if v.returncode != 0:
                raise RuntimeError("verify refused: " + _last_fail(v.stdout))
            sealed = d / "data-key.sealed"
            p = cli("seal", "--to", str(chain), *args, str(d / "data-key.bin"), str(sealed))
            if p.returncode != 0:
                raise RuntimeError("seal refused: " + (p.stderr.strip() or _last_fail(p.stdout)))
            s.sealed[party] = sealed
            return f"verify --expect engine={short(s.engine_digest)} passed; data key sealed (HPKE) to the loader's key"
        ok = bool(s.steps.run(f"{party}: ca-service verify + seal", verify_and_seal)) and ok
    return ok


def _last_fail(out: str) -> str:
    fails = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    return fails[0] if fails else out.strip()[-200:]


def step5_loader_runs(s: Story) -> bool:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca_service.ca import integrity
    from ca_service.relying_party.seal import unseal_stream

    click.echo("5. The loader unseals both keys and signs an integrity report of everything it loaded")
    key = serialization.load_pem_private_key((s.dir("loader") / "key.pem").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return bool(s.steps.check("loader key", False, "not an EC key"))

    def unseal() -> str:
        import io

        for party, path in s.sealed.items():
            out = io.BytesIO()
            with path.open("rb") as src:
                unseal_stream(key, src, out)
            if out.getvalue() != s.keys[party]:
                raise RuntimeError(f"the {party}'s key did not come back")
        return f"opened {', '.join(s.sealed)} data keys (only this key can)"

    def report() -> str:
        components = [integrity.Component("engine", s.engine_digest)]
        components += [integrity.Component(f"dataset/{p}", integrity.digest_of(data, "sha256"))
                       for p, data in DATASETS.items()]
        rep = integrity.build_report(order_id="demo-order-1", loader_certificate_serial=s.loader["serial"],
                                     issued_at=datetime.now(UTC), components=components,
                                     arguments_digest=integrity.digest_of(ARGUMENTS.encode()))
        signature, alg = integrity.sign_report(key, rep)
        chain = tuple(x509.load_pem_x509_certificates(s.loader["certificate_chain"].encode()))
        s.signed = integrity.SignedReport(report=rep, signature=signature, alg=alg, chain=chain)
        import json

        (s.dir("loader") / "report.json").write_text(json.dumps(s.signed.to_file_json(), indent=2) + "\n")
        return f"report {rep.sha256[:16]}... lists engine, dataset/lab, dataset/clinic and the arguments ({alg})"
    return bool(s.steps.run("loader: unseal", unseal)) and bool(s.steps.run("loader: integrity sign", report))


def step6_log_and_anchor(s: Story) -> bool:
    from ca_service.services.anchoring import anchor_now
    from ca_service.services.log import publish_checkpoint

    click.echo("6. The CA checks the report against the loader's certificate and log, logs it and anchors it")

    def submit() -> str:
        resp = requests.post(f"{s.url}/v1/integrity-reports", json=s.signed.post_body(), timeout=10)
        if resp.status_code != 201:
            raise RuntimeError(f"refused: {resp.status_code} {resp.json().get('code')}")
        s.record = resp.json()
        return f"logged at index {s.record['log_index']} (engine and arguments match what the loader measured)"

    def anchor() -> str:
        cp = publish_checkpoint(s.svc)
        s.anchor = anchor_now(s.svc)
        return (f"checkpoint of size {cp.size if cp else '?'} anchored in block {s.anchor.block_number} "
                f"of embedded chain {s.anchor.chain_id}")
    return bool(s.steps.run("CA: POST /v1/integrity-reports", submit)) and bool(s.steps.run("CA: anchor", anchor))


def step7_auditor(s: Story) -> bool:
    import json

    click.echo("7. An auditor re-verifies the report, its inclusion proof and the anchor")
    d = s.dir("auditor")
    (d / "record.json").write_text(requests.get(f"{s.url}/v1/integrity-reports/{s.record['id']}", timeout=10).text)
    vkey = requests.get(f"{s.url}/v1/log/vkey", timeout=10).text.strip()

    def audit() -> str:
        # the log key and the anchor contract are what the CA publishes and the auditor pins; the embedded
        # chain is read from the CA's home (CA_SERVICE_HOME), as `ca-service verify --rpc embedded` does
        p = cli("integrity", "verify", str(s.dir("loader") / "report.json"), "--root", str(s.root),
                "--proof", str(d / "record.json"), "--log-vkey", vkey, "--rpc", "embedded",
                "--contract", s.anchor.contract, "--json", home=s.home)
        try:
            checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
        except (ValueError, KeyError, TypeError):
            raise RuntimeError((p.stderr or p.stdout).strip()[-300:]) from None
        if p.returncode != 0:
            raise RuntimeError("; ".join(f"{n}: {c['detail']}" for n, c in checks.items() if not c["passed"]))
        if set(checks) != {"report", "signature", "log_inclusion", "anchor_contract", "anchor"}:
            raise RuntimeError(f"checked only {', '.join(checks)}")
        return (f"signature by the loader's certified key, chain to the root; {checks['log_inclusion']['detail']}; "
                f"{checks['anchor']['detail']} (contract {s.anchor.contract[:10]}..., pinned)")
    return bool(s.steps.run("auditor: ca-service integrity verify --proof --rpc embedded", audit))


STORY = (step1_vendor, step2_cvm, step3_loader, step4_data_owners, step5_loader_runs, step6_log_and_anchor,
         step7_auditor)
