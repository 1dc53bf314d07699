"""Re-appraisal on collateral updates with a status change (issue 14, Tests), driven as an operator does.

Real collateral has no status change between its dates (test_reappraise.py), so the vendor here is a
test Intel PKI (tests/collateral/testroot.py) whose root only this CA pins, through the test-only
setting ``CA_SERVICE_INSECURE_TEST_ROOTS`` (refused in production). The CA is ``ca-service init`` +
``ca-service serve`` on the session's database (SQLite, or PostgreSQL with CA_SERVICE_TEST_DATABASE);
the operator's steps are CLI commands (``policy apply``, ``collateral fetch --for`` against a loopback
replay of the test vendor, ``collateral import``, ``reappraise``), the
requests and reads are HTTP: certificates are really issued (``POST /v1/certificates`` with a TDX quote
bound to the challenge and the CSR key), and the outcome is read back from ``GET /v1/certificates/{serial}``,
the CRL and OCSP.

Three hosts: ``old`` and ``patched`` share an FMSPC (00806F050000), ``patched`` with a higher SGX TCB
(microcode) than ``old``; ``other`` has another FMSPC. Each gets a certificate under three copies of
policies/tdx-cvm.yaml (UpToDate only) that differ in ``collateral.on_collateral_update``: revoke, warn,
ignore.

- Scenario A, TCB recovery: TCB Info evaluation 20 has the hosts' level UpToDate; evaluation 21 (both
  FMSPCs) adds a higher level and makes the old one OutOfDate with INTEL-SA-TEST1. Only ``old`` is worse:
  the dry run lists "TCB status UpToDate -> OutOfDate, advisories +INTEL-SA-TEST1" for exactly its three
  certificates and changes nothing; applying revokes, flags or leaves them per policy.
- Scenario B, PCK revocation: a new PCK CRL lists ``patched``'s PCK certificate. Only its three
  certificates are judged refused (evidence.certificate_revoked), and acted on per policy; ``old``
  shares its FMSPC and is not touched.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.agent.client import make_csr
from ca_service.cli.main import cli
from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value
from ca_service.tlog.leaves import decode_leaf
from tests.collateral.replay import mirror_args, serve
from tests.collateral.testroot import REAL_CPU_SVN, SGX_SHAPE, Platform, TestIntel
from tests.integration.test_serve_faults import _free_port, _wait_ready

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ca_service.cli"]
ACTIONS = ("revoke", "warn", "ignore")
OTHER_FMSPC = bytes.fromhex("00906ed50000")
ADVISORY = "INTEL-SA-TEST1"


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    ti = TestIntel()
    hosts = {"old": ti.platform("old"), "patched": ti.platform("patched", cpu_svn=(9, 9, *REAL_CPU_SVN[2:])),
             "other": ti.platform("other", fmspc=OTHER_FMSPC)}
    n = {f: ti.collateral(f, evaluation=20) for f in (hosts["old"].fmspc, OTHER_FMSPC)}
    return {"ti": ti, "hosts": hosts, "n": n}


def _policy(action: str) -> str:
    doc = (REPO / "policies" / "tdx-cvm.yaml").read_text()
    doc = doc.replace("name: tdx-cvm", f"name: tdx-{action}")
    return doc.replace("collateral:\n", f"collateral:\n  on_collateral_update: {action}\n")


class Ca:
    """``ca-service serve`` with the test root pinned, and the operator's CLI on the same home."""

    def __init__(self, env: dict[str, str], url: str, home: Path) -> None:
        self.env, self.url, self.home = env, url, home
        self.imported: dict[str, Any] = {}

    def cli(self, *args: str) -> Any:
        res = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    def import_bundle(self, path: Path, data: bytes) -> dict[str, Any]:
        path.write_bytes(data)
        # --no-reappraise: these tests take the on-demand path (dry run, then `reappraise`);
        # test_collateral_trigger.py has the import that re-appraises by itself
        out: dict[str, Any] = json.loads(self.cli("collateral", "import", "--no-reappraise", "--json", str(path)))
        return out

    def issue(self, ti: TestIntel, host: Platform, policy: str) -> requests.Response:
        return self.issue_with("tdx-quote", lambda binding: ti.quote(host, binding), policy, host.name)

    def issue_with(self, kind: str, evidence: Callable[[bytes], bytes], policy: str, name: str) -> requests.Response:
        """``POST /v1/certificates`` with ``evidence(binding)`` bound to a fresh challenge and CSR key."""
        ch = requests.post(f"{self.url}/v1/challenges", timeout=30).json()
        key = ec.generate_private_key(ec.SECP256R1())
        data = evidence(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())))
        return requests.post(f"{self.url}/v1/certificates", timeout=60, json={
            "challenge_id": ch["id"], "policy": policy,
            "csr": make_csr(key, (f"{name}.cvm.example",)).public_bytes(Encoding.PEM).decode(),
            "evidence": [{"type": kind, "data": base64.b64encode(data).decode()}]})

    def record(self, serial: str) -> dict[str, Any]:
        r = requests.get(f"{self.url}/v1/certificates/{serial}", timeout=30)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def crl_serials(self) -> set[str]:
        crl = x509.load_der_x509_crl(requests.get(f"{self.url}/v1/ca/crl", timeout=30).content)
        return {format(e.serial_number, "x") for e in crl}

    def leaves_from(self, index: int) -> list[Any]:
        """Every log leaf from ``index`` on, read over HTTP until the log has no more."""
        out = []
        while (r := requests.get(f"{self.url}/v1/log/entries/{index}", timeout=30)).status_code == 200:
            out.append(decode_leaf(base64.b64decode(r.json()["leaf"])))
            index += 1
        assert r.status_code == 404 and r.json()["code"] == "log.entry_not_found", r.text
        return out

    def audit(self) -> list[dict[str, Any]]:
        token = json.loads(self.cli("token", "create", "--role", "auditor", "--json"))
        r = requests.get(f"{self.url}/v1/audit", params={"limit": 500}, timeout=30,
                         headers={"Authorization": f"Bearer {token['token']}"})
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    def ocsp(self, pem_chain: str) -> ocsp.OCSPCertStatus:
        leaf, issuing = x509.load_pem_x509_certificates(pem_chain.encode())[:2]
        req = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
        r = requests.post(f"{self.url}/v1/ocsp", data=req.public_bytes(Encoding.DER), timeout=30,
                          headers={"Content-Type": "application/ocsp-request"})
        return ocsp.load_der_ocsp_response(r.content).certificate_status


@contextmanager
def running_ca(tmp_path_factory: Any, db_url: str, test_roots: str, policies: dict[str, str], bundle: bytes,
               duty_interval: str | None) -> Iterator[Ca]:
    """A fresh CA (``init``, then ``serve`` with two workers) pinning ``test_roots``
    (CA_SERVICE_INSECURE_TEST_ROOTS), with ``policies`` (file name -> YAML) applied and active and
    ``bundle`` imported; ``serve``'s collateral duty runs every ``duty_interval`` seconds, or not at all."""
    home = tmp_path_factory.mktemp("testroot-ca")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url, "CA_SERVICE_PUBLIC_URL": url,
           "CA_SERVICE_INSECURE_TEST_ROOTS": test_roots, "CA_SERVICE_RATE_LIMIT": "off"}
    if duty_interval is not None:
        env["CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS"] = duty_interval
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    c = Ca(env, url, home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InsecureTestRootsWarning: what this CA is for
        for name, doc in policies.items():
            (home / name).write_text(doc)
            c.cli("policy", "apply", "--activate", str(home / name))
        c.imported = c.import_bundle(home / "bundle.json", bundle)
        duty = ["--collateral-refresh"] if duty_interval is not None else ["--no-collateral-refresh"]
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                                 "--publish-interval", "0", *duty],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _wait_ready(url, proc)
            yield c
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@contextmanager
def _running_ca(tmp_path_factory: Any, db_url: str, world: dict[str, Any], duty_interval: str | None) -> Iterator[Ca]:
    """The test Intel PKI's CA: three policies and the hosts' evaluation-20 collateral."""
    root = world["ti"].write_root(tmp_path_factory.mktemp("test-intel-root") / "root.pem")
    with running_ca(tmp_path_factory, db_url, f"intel={root}", {f"{a}.yaml": _policy(a) for a in ACTIONS},
                    world["ti"].bundle(*world["n"].values()), duty_interval) as c:
        assert len(c.imported["added"]) == 5  # two TCB Infos, the QE Identity, the PCK CRL and the Root CA CRL
        yield c


@pytest.fixture
def ca(tmp_path_factory, db_url_factory, world) -> Iterator[Ca]:
    """The on-demand path: serve runs no collateral duty, the operator runs ``reappraise``."""
    with _running_ca(tmp_path_factory, db_url_factory(), world, None) as c:
        yield c


def _issue_all(ca: Ca, world: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(host, action) -> the issuance answer, for every host under every policy."""
    out = {}
    for host_name, host in world["hosts"].items():
        for action in ACTIONS:
            r = ca.issue(world["ti"], host, f"tdx-{action}")
            assert r.status_code == 201, r.text
            body = r.json()
            sub = body["ear"]["submods"]["tdx-quote"]
            assert (body["ear"]["ear.status"], sub["ca-service.tcb-status"]) == ("affirming", "UpToDate")
            # judged by the test PKI's collateral the CA holds: TCB Info of this host's FMSPC, evaluation 20
            used = {u["item"]: u for u in body["appraisal"]["collateral"]["tdx-quote"]}
            assert used["intel.tcb_info.tdx"]["key"] == host.fmspc.hex()
            out[(host_name, action)] = body
    return out


def _dry_run(ca: Ca) -> dict[str, dict[str, Any]]:
    return {r["serial"]: r for r in json.loads(ca.cli("reappraise", "--dry-run", "--json"))}


def _check_applied(ca: Ca, issued: dict[tuple[str, str], dict[str, Any]], affected: str, after: str,
                   reason: str) -> None:
    """``reappraise``: exactly ``affected``'s certificates are acted on, each as its policy says."""
    out = json.loads(ca.cli("reappraise", "--json"))
    serial = {k: v["serial"] for k, v in issued.items()}
    assert {(a["serial"], a["action"]) for a in out["actions"]} == {(serial[(affected, act)], act) for act in ACTIONS}
    assert all((a["before"], a["after"]) == ("affirming", after) for a in out["actions"])
    _check_state(ca, issued, {affected: (after, reason)})


def _check_state(ca: Ca, issued: dict[tuple[str, str], dict[str, Any]],
                 affected: dict[str, tuple[str, str]]) -> None:
    """``affected`` hosts' certificates (host -> (status after, a reason)) revoked under the revoke
    policy, flagged under warn, left under ignore; every other certificate valid and unflagged; the CRL,
    OCSP, the log (one leaf per action, in the order of ``affected``) and the audit log say exactly that."""
    serial = {k: v["serial"] for k, v in issued.items()}
    for (host, action), body in issued.items():
        rec = ca.record(body["serial"])
        hit = host in affected
        if hit and action == "revoke":
            assert (rec["status"], rec["revocation_reason"]) == ("revoked", "privilegeWithdrawn")
        else:
            assert rec["status"] == "valid", (host, action, rec["status"])
        flag = rec["appraisal"].get("reappraisal")
        if hit and action == "warn":
            assert (flag["before"], flag["after"]) == ("affirming", affected[host][0])
            assert any(affected[host][1] in r for r in flag["reasons"]), flag
        else:
            assert flag is None, (host, action, flag)
        status = ca.ocsp(body["certificate_chain"])
        assert status == (ocsp.OCSPCertStatus.REVOKED if hit and action == "revoke" else ocsp.OCSPCertStatus.GOOD)
    revoked = {serial[(h, "revoke")] for h in affected}
    flagged = {serial[(h, "warn")] for h in affected}
    assert ca.crl_serials() & set(serial.values()) == revoked
    # the log says so, one leaf per action (GET /v1/log/entries/{i} after the issuances' own leaves)
    first = max(v["log_index"] for v in issued.values()) + 1
    assert [(lf.type, lf.body["serial"]) for lf in ca.leaves_from(first) if lf.type in ("revocation", "reappraisal")] \
        == [leaf for h in affected for leaf in (("revocation", serial[(h, "revoke")]),
                                                ("reappraisal", serial[(h, "warn")]))]
    # and so does the audit log (GET /v1/audit, auditor token from the CLI)
    audit = {(e["action"], e["target"]) for e in ca.audit() if e["target"] in serial.values()}
    assert {t for a, t in audit if a == "certificate.revoke"} == revoked
    assert {t for a, t in audit if a == "certificate.reappraised"} == flagged


def _recovery(world: dict[str, Any]) -> dict[bytes, bytes]:
    """Intel publishes evaluation 21 for both FMSPCs: a new top level; the former one is OutOfDate."""
    ti, later = world["ti"], world["ti"].now - timedelta(minutes=30)
    return {world["hosts"]["old"].fmspc: ti.collateral(world["hosts"]["old"].fmspc, evaluation=21, issued=later,
                                                       levels=ti.tcb_levels(recovery=ADVISORY)),
            OTHER_FMSPC: ti.collateral(OTHER_FMSPC, evaluation=21, issued=later)}


def _revoking_crl(world: dict[str, Any]) -> bytes:
    """The evaluation-20 collateral with a new PCK CRL that lists the patched host's PCK certificate."""
    ti = world["ti"]
    doc = json.loads(world["n"][world["hosts"]["old"].fmspc])
    doc["pck_crl"] = ti.pck_crl((world["hosts"]["patched"],), number=2, issued=ti.now - timedelta(minutes=30)).hex()
    return ti.bundle(json.dumps(doc).encode())


def test_tcb_recovery_revokes_or_flags_exactly_the_platforms_it_makes_out_of_date(ca, world, tmp_path):
    ti, hosts = world["ti"], world["hosts"]
    issued = _issue_all(ca, world)
    serial = {k: v["serial"] for k, v in issued.items()}
    recovery = _recovery(world)
    # the operator's air-gapped path: `collateral fetch --for` the fleet's quotes on a connected machine
    # (the test vendor's PCS behind the loopback replay), then `collateral import` on the CA
    quotes = []
    for name in ("old", "other"):
        quotes += ["--for", str(tmp_path / f"{name}.quote")]
        (tmp_path / f"{name}.quote").write_bytes(ti.quote(hosts[name], bytes(64)))
    with serve(json.loads(ti.bundle(*recovery.values()))) as (app, base):
        fetched = json.loads(ca.cli("collateral", "fetch", *quotes, str(tmp_path / "n1.json"), *mirror_args(base),
                                    "--json"))
    assert fetched["refused"] == [] and len(fetched["fetched"]) == 5 and len(app.requests) == 5
    got = json.loads(ca.cli("collateral", "import", "--no-reappraise", "--json", str(tmp_path / "n1.json")))
    # two TCB Infos and the QE Identity at evaluation 21 (the CRLs are the same items again)
    assert sorted(u.split("?")[0].rsplit("/", 1)[-1] for u in got["added"]) == ["identity", "tcb", "tcb"]
    # the dry run: exactly old's certificates change, with the reason; nothing is acted on
    results = _dry_run(ca)
    assert set(serial.values()) <= set(results)
    changed = {s for s, r in results.items() if r["changed"]}
    assert changed == {serial[("old", a)] for a in ACTIONS}
    for s in changed:
        r = results[s]
        assert (r["before"], r["after"]) == ("affirming", "contraindicated")
        assert "tdx-quote: TCB status UpToDate -> OutOfDate" in r["reasons"]
        assert f"tdx-quote: advisories +{ADVISORY}" in r["reasons"]
    for s in set(serial.values()) - changed:
        assert (results[s]["before"], results[s]["after"], results[s]["reasons"]) == ("affirming", "affirming", [])
    text = ca.cli("reappraise", "--dry-run")
    assert f"{serial[('old', 'revoke')]}\ttdx-revoke\taffirming -> contraindicated\tCHANGED" in text
    assert f"\ttdx-quote: TCB status UpToDate -> OutOfDate\n\ttdx-quote: advisories +{ADVISORY}" in text
    assert all(ca.record(s)["status"] == "valid" for s in serial.values())  # a dry run changes nothing
    # apply: each policy's on_collateral_update decides
    _check_applied(ca, issued, "old", "contraindicated", "TCB status UpToDate -> OutOfDate")
    # and from now on the CA judges by evaluation 21: old is refused, patched still issues
    r = ca.issue(ti, hosts["old"], "tdx-warn")
    assert r.status_code == 403 and r.json()["code"] == "appraisal.failed", r.text
    assert ca.issue(ti, hosts["patched"], "tdx-warn").status_code == 201


def test_a_pck_crl_that_revokes_one_platform_affects_only_its_certificates(ca, world, tmp_path):
    ti, hosts = world["ti"], world["hosts"]
    issued = _issue_all(ca, world)
    serial = {k: v["serial"] for k, v in issued.items()}
    got = ca.import_bundle(tmp_path / "crl.json", _revoking_crl(world))
    assert [u.split("?")[0].rsplit("/", 1)[-1] for u in got["added"]] == ["pckcrl"]  # the rest is cached
    results = _dry_run(ca)
    changed = {s for s, r in results.items() if r["changed"]}
    assert changed == {serial[("patched", a)] for a in ACTIONS}  # old shares its FMSPC, not its PCK
    for s in changed:
        assert results[s]["after"] == "refused"
        assert results[s]["reasons"][0].startswith("refused [evidence.certificate_revoked]"), results[s]
    _check_applied(ca, issued, "patched", "refused", "refused [evidence.certificate_revoked]")
    r = ca.issue(ti, hosts["patched"], "tdx-ignore")
    assert r.status_code in (400, 403, 422) and r.json()["code"] == "evidence.certificate_revoked", r.text
    assert ca.issue(ti, hosts["old"], "tdx-ignore").status_code == 201


def _wait_for(what: str, check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"serve's collateral duty did not {what} within {timeout:.0f}s"
        time.sleep(0.5)


def test_the_collateral_duty_acts_on_a_refresh_and_on_an_import(tmp_path_factory, db_url_factory, world, tmp_path):
    """Who runs it: the collateral duty, under its single-replica lock. First the online path:
    ``collateral refresh`` from the test vendor's PCS (a loopback replay as the mirror) brings the TCB
    recovery, and the duty (the CLI's run or ``serve``'s, whichever takes the lock first) acts on it.
    Then ``serve``'s duty alone (every second, in whichever worker holds the lock) judges a PCK CRL that
    an import brought with --no-reappraise. Each time only what the change makes worse is acted on, once:
    a certificate flagged before is not flagged again for the same finding."""
    with _running_ca(tmp_path_factory, db_url_factory(), world, "1") as ca:
        issued = _issue_all(ca, world)
        serial = {k: v["serial"] for k, v in issued.items()}
        old = {"old": ("contraindicated", "TCB status UpToDate -> OutOfDate")}
        with serve(json.loads(world["ti"].bundle(*_recovery(world).values()))) as (_, base):
            out = json.loads(ca.cli("collateral", "refresh", "--within", "31d", *mirror_args(base), "--json"))
        assert out["refused"] == [] and len(out["unchanged"]) == 2  # the CRLs are the same
        assert sorted(u.split("?")[0].rsplit("/", 1)[-1] for u in out["refreshed"]) == ["identity", "tcb", "tcb"]
        _wait_for("revoke and flag", lambda: ca.record(serial[("old", "revoke")])["status"] == "revoked"
                  and "reappraisal" in ca.record(serial[("old", "warn")])["appraisal"])
        _check_state(ca, issued, old)
        ca.import_bundle(tmp_path / "crl.json", _revoking_crl(world))
        _wait_for("revoke and flag", lambda: ca.record(serial[("patched", "revoke")])["status"] == "revoked"
                  and "reappraisal" in ca.record(serial[("patched", "warn")])["appraisal"])
        _check_state(ca, issued, old | {"patched": ("refused", "refused [evidence.certificate_revoked]")})


def test_a_production_ca_refuses_to_start_with_test_roots(tmp_path, world):
    """The setting is not reachable in production by accident: serve and every command refuse it."""
    root = world["ti"].write_root(tmp_path / "root.pem")
    env = {**os.environ, "CA_SERVICE_HOME": str(tmp_path / "home"), "CA_SERVICE_PROFILE": "production",
           "CA_SERVICE_INSECURE_TEST_ROOTS": f"intel={root}"}
    for args in (["serve", "--bind", f"127.0.0.1:{_free_port()}"], ["init"], ["collateral", "list"]):
        res = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "error [config.invalid]" in res.stderr, (args, res.stderr)
        assert "refused in the production profile" in res.stderr
    assert not (tmp_path / "home" / "ca-service.db").exists()


SGX_POLICY = """name: sgx-{action}
description: SGX enclaves of the fleet (the enclave of the shape vector) at the latest TCB level
evidence:
  required: [sgx-quote]
  sgx-quote:
    tcb_status: [UpToDate]
    advisories: {{allow: []}}
    debug: false
    mrenclave: [a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd]
    mrsigner: [8f2dbc0f9c5d3378d596974b2deed1f93223cc49242899f83809bcc92546132c]
collateral:
  on_collateral_update: {action}
certificate:
  max_lifetime: 24h
  san:
    dns: ["*.cvm.example"]
"""


def test_an_sgx_tcb_recovery_goes_the_same_way(tmp_path_factory, db_url_factory, tmp_path):
    """The SGX family through the same path: SGX v3 quotes (shape sgx/automata-v3-swhardening) of an
    unpatched and a patched host; a TCB recovery of their FMSPC's SGX TCB Info (evaluation 20 -> 21)
    makes only the unpatched host's certificates worse."""
    ti = TestIntel(shape=SGX_SHAPE)
    hosts = {"sgx-old": ti.platform("sgx-old"), "sgx-patched": ti.platform("sgx-patched",
                                                                           cpu_svn=(15, 15, *ti.cpu_svn[2:]))}
    root = ti.write_root(tmp_path / "root.pem")
    with running_ca(tmp_path_factory, db_url_factory(), f"intel={root}",
                    {f"{a}.yaml": SGX_POLICY.format(action=a) for a in ACTIONS},
                    ti.bundle(ti.collateral(ti.fmspc, evaluation=20)), None) as ca:
        assert len(ca.imported["added"]) == 4
        issued = {}
        for name, host in hosts.items():
            for a in ACTIONS:
                r = ca.issue_with("sgx-quote", lambda b, h=host: ti.quote(h, b), f"sgx-{a}", name)
                assert r.status_code == 201, r.text
                used = {u["item"]: u["key"] for u in r.json()["appraisal"]["collateral"]["sgx-quote"]}
                assert used["intel.tcb_info.sgx"] == ti.fmspc.hex()
                issued[(name, a)] = r.json()
        serial = {k: v["serial"] for k, v in issued.items()}
        recovery = ti.collateral(ti.fmspc, evaluation=21, issued=ti.now - timedelta(minutes=30),
                                 levels=ti.tcb_levels(recovery=ADVISORY))
        # as the TDX recovery: `collateral fetch --for` the SGX quotes from the test vendor's PCS (loopback
        # replay), which asks its /sgx/ endpoints, then `collateral import`
        for name, host in hosts.items():
            (tmp_path / f"{name}.quote").write_bytes(ti.quote(host, bytes(64)))
        with serve(json.loads(ti.bundle(recovery))) as (app, base):
            fetched = json.loads(ca.cli("collateral", "fetch", "--for", str(tmp_path / "sgx-old.quote"),
                                        "--for", str(tmp_path / "sgx-patched.quote"), str(tmp_path / "n1.json"),
                                        *mirror_args(base), "--json"))
        assert fetched["refused"] == [] and len(fetched["fetched"]) == 4 and len(app.requests) == 4
        assert sorted(app.requests) == ["/IntelSGXRootCA.der", "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
                                        "/sgx/certification/v4/qe/identity",
                                        f"/sgx/certification/v4/tcb?fmspc={ti.fmspc.hex().upper()}"]
        got = json.loads(ca.cli("collateral", "import", "--no-reappraise", "--json", str(tmp_path / "n1.json")))
        assert sorted(u.split("?")[0].rsplit("/", 1)[-1] for u in got["added"]) == ["identity", "tcb"]
        results = _dry_run(ca)
        assert {s for s, r in results.items() if r["changed"]} == {serial[("sgx-old", a)] for a in ACTIONS}
        for a in ACTIONS:
            r = results[serial[("sgx-old", a)]]
            assert (r["before"], r["after"]) == ("affirming", "contraindicated")
            assert r["reasons"][:2] == ["sgx-quote: TCB status UpToDate -> OutOfDate",
                                        f"sgx-quote: advisories +{ADVISORY}"]
        out = json.loads(ca.cli("reappraise", "--json"))
        assert {(x["serial"], x["action"]) for x in out["actions"]} == {(serial[("sgx-old", a)], a) for a in ACTIONS}
        _check_state(ca, issued, {"sgx-old": ("contraindicated", "sgx-quote: TCB status UpToDate -> OutOfDate")})
