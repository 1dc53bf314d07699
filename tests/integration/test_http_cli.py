"""The way users run it: `ca-service init`, `serve` (gunicorn, several workers), `agent request`,
`verify`, `demo`, over real HTTP on loopback, against the session's database (SQLite or PostgreSQL)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.ports import free_port as _free_port

CLI = [sys.executable, "-m", "ca_service.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("srv")
    port = _free_port()
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "policy 'sim' activated" in init.stdout
    assert (home / "offline" / "root-key.pem").exists()
    assert b"ENCRYPTED" in (home / "offline" / "root-key.pem").read_bytes()
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "3"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        time.sleep(0.2)
    else:
        proc.terminate()
        raise RuntimeError("server did not become ready")
    yield {"url": url, "env": env, "home": home}
    proc.terminate()
    proc.wait(timeout=30)


def test_init_is_idempotent(server):
    again = subprocess.run([*CLI, "init"], env=server["env"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    assert "already initialised" in again.stdout


def test_agent_request_and_openssl(server, tmp_path: Path):
    out = tmp_path / "out"
    p = subprocess.run([*CLI, "agent", "request", "--server", server["url"], "--policy", "sim", "--out", str(out),
                        "--sim", "--dns", "node1.cvm.local"], env=server["env"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for name in ("key.pem", "chain.pem", "response.json"):
        assert (out / name).exists()
    assert oct((out / "key.pem").stat().st_mode)[-3:] == "600"
    pems = (out / "chain.pem").read_text().split("-----END CERTIFICATE-----")
    (tmp_path / "leaf.pem").write_text(pems[0] + "-----END CERTIFICATE-----\n")
    (tmp_path / "issuing.pem").write_text(pems[1].lstrip() + "-----END CERTIFICATE-----\n")
    if shutil.which("openssl"):
        v = subprocess.run(["openssl", "verify", "-CAfile", str(server["home"] / "root.pem"), "-untrusted",
                            str(tmp_path / "issuing.pem"), str(tmp_path / "leaf.pem")], capture_output=True, text=True)
        assert v.returncode == 0, v.stderr
    # the relying party's offline check
    ok = subprocess.run([*CLI, "verify", str(out / "chain.pem"), "--root", str(server["home"] / "root.pem"),
                         "--accept-insecure"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout
    strict = subprocess.run([*CLI, "verify", str(out / "chain.pem"), "--root", str(server["home"] / "root.pem")],
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1, "an insecure-dev certificate must not pass without --accept-insecure"
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.ca.profile import build_root
    other = ec.generate_private_key(ec.SECP384R1())
    from datetime import UTC, datetime
    (tmp_path / "other-root.pem").write_bytes(build_root(other, now=datetime.now(UTC), insecure=True).public_bytes(Encoding.PEM))
    wrong = subprocess.run([*CLI, "verify", str(out / "chain.pem"), "--root", str(tmp_path / "other-root.pem"),
                            "--accept-insecure"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1


def test_agent_refusal_is_reported(server, tmp_path: Path):
    p = subprocess.run([*CLI, "agent", "request", "--server", server["url"], "--policy", "no-such-policy",
                        "--out", str(tmp_path / "o"), "--sim"], env=server["env"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert "policy.not_found" in p.stderr
    assert not (tmp_path / "o" / "chain.pem").exists()


def test_concurrent_use_of_one_challenge(server):
    """Many workers, one challenge: exactly one certificate, the rest 409 challenge.consumed."""
    import warnings

    from ca_service.config import Settings
    from ca_service.services.bootstrap import load_sim_tee
    from tests.conftest import Issuer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(Settings(home=server["home"]))

    class _HttpClient:
        def post(self, path, json=None):
            r = requests.post(server["url"] + path, json=json, timeout=30)
            r.get_json = r.json
            return r

    iss = Issuer(_HttpClient(), tee)
    url = server["url"]
    for _round in range(3):
        body, _ = iss.body()
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda _: requests.post(f"{url}/v1/certificates", json=body, timeout=60), range(12)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(201) == 1, codes
        assert all(r.json()["code"] == "challenge.consumed" for r in results if r.status_code != 201)


def test_garbage_does_not_break_the_server(server):
    url = server["url"]
    for data in (b"\x00\xff" * 100, b"{\"evidence\": [", b"null", b"[]" * 1000):
        r = requests.post(f"{url}/v1/certificates", data=data, headers={"Content-Type": "application/json"}, timeout=30)
        assert 400 <= r.status_code < 500
        assert r.headers["Content-Type"].startswith("application/problem+json")
    r = requests.post(f"{url}/v1/certificates", data=b"x" * (5 * 1024 * 1024),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_demo_exits_zero(tmp_path: Path):
    """The three-party story of issue 13: seven steps naming their parties, then the refusals."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    p = subprocess.run([*CLI, "demo", "--home", str(tmp_path / "demo")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "every check passed" in p.stdout
    assert "FAIL" not in p.stdout
    lines = p.stdout.splitlines()
    heads = [line.split(".", 1)[0] for line in lines if line[:1].isdigit() and line[1:3] == ". "]
    assert heads == ["0", "1", "2", "3", "4", "5", "6", "7"]
    for party in ("model vendor", "CVM agent", "loader", "lab", "clinic", "CA", "auditor", "operator"):
        assert any(f"] {party}" in line or f"{party}:" in line for line in lines), party
    refusals = p.stdout.split("Then what is refused:")[1]
    for refused in ("403 appraisal.failed (loader_digests", "the EAR has no claim named 'engine'",
                    "revocation REVOKED", "422 integrity.certificate_revoked", "403 loader.cvm_certificate_missing",
                    "422 binding.mismatch", "409 challenge.consumed"):
        assert refused in refusals, refused
    assert refusals.count("[PASS]") == 7
    assert "ear.status is 'warning'" in p.stdout and "embedded chain" in p.stdout
    # what the parties left behind: the loader's certificate links to the CVM's, the report is logged
    home = tmp_path / "demo" / "parties"
    loader = json.loads((home / "loader" / "response.json").read_text())
    cvm = json.loads((home / "cvm" / "response.json").read_text())
    assert loader["ear"]["ca-service.cvm-serial"] == cvm["serial"]
    assert (home / "lab" / "data-key.sealed").exists() and (home / "clinic" / "data-key.sealed").exists()


def test_demo_runs_again_on_the_home_it_kept(tmp_path: Path):
    """`demo --home DIR` twice: the second run uses the CA it kept (one log, one origin, whatever port each run
    serves on; it failed at the anchor with log.origin_mismatch), and that origin is the one `ca-service serve`
    derives by default, so the kept home is served without CA_SERVICE_LOG_ORIGIN."""
    import sqlite3

    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    demo = [*CLI, "demo", "--home", str(tmp_path / "demo")]
    first = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("0. CA operator: a fresh CA in ")
    second = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith("0. CA operator: the demo CA kept in ")
    assert "FAIL" not in second.stdout and "every check passed" in second.stdout
    assert second.stdout.split("Then what is refused:")[1].count("[PASS]") == 7
    with sqlite3.connect(tmp_path / "demo" / "ca-service.db") as conn:
        notes = [row[0] for row in conn.execute("SELECT note FROM tlog_checkpoints")]
    assert len(notes) >= 2 and {n.split("\n", 1)[0] for n in notes} == {"127.0.0.1:8080/ca-service/log"}


def test_evidence_verify_cli_sim(server, tmp_path: Path):
    import warnings

    from ca_service.config import Settings
    from ca_service.services.bootstrap import load_sim_tee

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(Settings(home=server["home"]))
    (tmp_path / "ev.bin").write_bytes(tee.report(b"\x42" * 64))
    (tmp_path / "sim-root.der").write_bytes(tee.root_der())
    ok = subprocess.run([*CLI, "evidence", "verify", "sim", str(tmp_path / "ev.bin"), "--sim-root",
                         str(tmp_path / "sim-root.der"), "--nonce", "4242", "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    import json
    out = json.loads(ok.stdout)
    assert out["ok"] is True and out["type"] == "sim" and out["claims"]["report_data"] == "42" * 64
    unpinned = subprocess.run([*CLI, "evidence", "verify", "sim", str(tmp_path / "ev.bin"), "--json"],
                              capture_output=True, text=True)
    assert unpinned.returncode == 1
    assert json.loads(unpinned.stdout)["error"]["code"] == "evidence.root_untrusted"
    base64.b64encode(b"")  # keep import used


def test_revoke_cli_and_crl_over_http(server, tmp_path: Path):
    import json as _json

    from cryptography import x509

    out = tmp_path / "r"
    p = subprocess.run([*CLI, "agent", "request", "--server", server["url"], "--policy", "sim", "--out", str(out),
                        "--sim"], env=server["env"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    serial = _json.loads((out / "response.json").read_text())["serial"]
    r = subprocess.run([*CLI, "revoke", serial, "--reason", "superseded"], env=server["env"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert requests.get(f"{server['url']}/v1/certificates/{serial}", timeout=10).json()["status"] == "revoked"
    crl = x509.load_der_x509_crl(requests.get(f"{server['url']}/v1/ca/crl", timeout=10).content)
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    again = subprocess.run([*CLI, "revoke", serial], env=server["env"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "conflict" in again.stderr
