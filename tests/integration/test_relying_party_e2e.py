"""The relying party's whole offline check, the way a user runs it: a CA served by gunicorn that
publishes checkpoints and anchors them on a real Anvil node; `ca-service verify` with the root,
the proof bundle, the log key and the chain RPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.anchor_fixtures import ANVIL, CHAIN_ID, DEV_KEY, SKIP_NO_ANVIL, AnvilNode, _free_port

CLI = [sys.executable, "-m", "ca_service.cli"]
pytestmark = pytest.mark.skipif(not ANVIL.exists(), reason=SKIP_NO_ANVIL)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until /readyz answers 200, however long a loaded box takes to start gunicorn's workers. (It was
    300 tries: ~30 s while the port refused, no wait at all while it answered 503, and no failure
    when it never came up, so the next step met a server still starting.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"serve was not ready within {timeout:.0f} s"
        time.sleep(0.2)


def test_verify_certificate_log_proof_and_anchor(tmp_path: Path, db_url_factory):
    node = AnvilNode(tmp_path)
    node.start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_PUBLIC_URL": url,
           "CA_SERVICE_CHAIN_RPC": node.url, "CA_SERVICE_CHAIN_ID": str(CHAIN_ID),
           "CA_SERVICE_CHAIN_PRIVATE_KEY": DEV_KEY, "CA_SERVICE_ANCHOR_CONFIRMATIONS": "0",
           "CA_SERVICE_ANCHOR_INTERVAL_SECONDS": "1"}
    proc = None
    try:
        assert subprocess.run([*CLI, "init"], env=env, capture_output=True, timeout=120).returncode == 0
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                                 "--publish-interval", "0.5"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(url, proc)
        out = tmp_path / "cvm"
        p = subprocess.run([*CLI, "agent", "request", "--server", url, "--policy", "sim", "--out", str(out), "--sim"],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        serial = json.loads((out / "response.json").read_text())["serial"]
        # the server publishes a checkpoint and its anchor worker anchors it; wait for both to meet
        deadline = time.time() + 90
        got = None
        while time.time() < deadline:
            r = requests.get(f"{url}/v1/certificates/{serial}/proof", headers={"Accept": "application/json"},
                             timeout=10)
            if r.status_code == 200:
                got = r.json()
                size = int(got["bundle"].partition("\n\n")[2].split("\n")[1])
                if got["anchor"] and got["anchor"]["state"] == "final" and got["anchor"]["size"] == size:
                    break
            time.sleep(0.5)
        assert got is not None and got["anchor"] is not None, got
        (tmp_path / "proof.txt").write_text(got["bundle"])
        vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
        args = [*CLI, "verify", str(out / "chain.pem"), "--root", str(home / "root.pem"), "--accept-insecure",
                "--proof", str(tmp_path / "proof.txt"), "--log-vkey", vkey, "--rpc", node.url,
                "--contract", got["anchor"]["contract"], "--json"]
        v = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
        report = json.loads(v.stdout)
        names = {s["name"]: s["result"] for s in report["steps"]}
        assert names == {"chain": "pass", "validity": "pass", "revocation": "pass", "profile": "warn",
                         "status": "pass", "anchor_contract": "pass", "log_leaf": "pass", "log_inclusion": "pass",
                         "anchor": "pass"}, report
        assert report["verdict"] == "pass"
        # a proof for another leaf, or a forged log key, fails
        lines = got["bundle"].split("\n")
        idx = next(i for i, line in enumerate(lines) if line.startswith("index "))
        lines[idx] = f"index {int(lines[idx].split()[1]) + 1}"
        (tmp_path / "bad.txt").write_text("\n".join(lines))
        bad = subprocess.run([*args[:9], str(tmp_path / "bad.txt"), *args[10:]], capture_output=True, text=True)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert '"log_leaf"' in bad.stdout or '"log_inclusion"' in bad.stdout
        from cryptography.hazmat.primitives.asymmetric import ed25519

        from ca_service.tlog.checkpoint import NoteVerifier
        forged = NoteVerifier(vkey.split("+")[0], ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
        wrong_key = subprocess.run([*args[:11], forged.vkey, *args[12:]], capture_output=True, text=True)
        assert wrong_key.returncode == 1
        assert '"log_inclusion"' in wrong_key.stdout
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        node.stop()


def _serve(tmp_path: Path, db_url: str, node: AnvilNode, *extra: str) -> tuple[subprocess.Popen, str, dict, Path]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url, "CA_SERVICE_PUBLIC_URL": url,
           "CA_SERVICE_CHAIN_RPC": node.url, "CA_SERVICE_CHAIN_ID": str(CHAIN_ID),
           "CA_SERVICE_CHAIN_PRIVATE_KEY": DEV_KEY, "CA_SERVICE_ANCHOR_CONFIRMATIONS": "0"}
    env.pop("CA_SERVICE_ANCHOR_CONTRACT", None)
    assert subprocess.run([*CLI, "init"], env=env, capture_output=True, timeout=120).returncode == 0
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(url, proc)
    return proc, url, env, home


def _issue(url: str, env: dict, out: Path) -> tuple[str, int]:
    p = subprocess.run([*CLI, "agent", "request", "--server", url, "--policy", "sim", "--out", str(out), "--sim"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "response.json").read_text())
    return doc["serial"], doc["log_index"]


def _checkpointed(url: str, size: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        r = requests.get(f"{url}/v1/log/checkpoint", timeout=10)
        if r.status_code == 200 and int(r.text.split("\n")[1]) >= size:
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of size {size}")


def _anchor_once(env: dict) -> int:
    p = subprocess.run([*CLI, "anchor", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    latest = json.loads(requests.get(f"{env['CA_SERVICE_PUBLIC_URL']}/v1/anchors/latest", timeout=10).text)
    assert latest["state"] == "final", latest
    return int(latest["size"])


def test_an_older_certificate_verifies_with_only_root_log_key_and_rpc(tmp_path: Path, db_url_factory):
    """Issue, anchor, issue more, anchor again: the first certificate (no longer under the newest
    anchor's size alone) verifies with nothing but --root, --log-vkey and --rpc. The CLI finds the
    covering anchor in the contract's Anchored events, fetches the proof under that anchored
    checkpoint (GET /v1/certificates/{serial}/proof?size=N) and checks it against the chain; a
    proof under a later, unanchored checkpoint passes through an RFC 9162 consistency proof."""
    node = AnvilNode(tmp_path)
    node.start()
    proc = None
    try:
        proc, url, env, home = _serve(tmp_path, db_url_factory(), node, "--publish-interval", "0.3", "--no-anchor")
        serial1, idx1 = _issue(url, env, tmp_path / "c1")
        _checkpointed(url, idx1 + 1)
        size1 = _anchor_once(env)
        assert size1 > idx1
        for i in (2, 3):
            _issue(url, env, tmp_path / f"c{i}")
        serial4, idx4 = _issue(url, env, tmp_path / "c4")
        _checkpointed(url, idx4 + 1)
        size2 = _anchor_once(env)
        assert size2 > size1
        serial5, idx5 = _issue(url, env, tmp_path / "c5")  # logged and checkpointed, never anchored
        _checkpointed(url, idx5 + 1)
        vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
        base = [*CLI, "verify", "--root", str(home / "root.pem"), "--accept-insecure", "--log-vkey", vkey,
                "--rpc", node.url, "--json"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}

        def verify(cert: Path, *more: str) -> tuple[int, dict]:
            v = subprocess.run([*base[:4], str(cert), *base[4:], *more], env=clean, capture_output=True, text=True,
                               timeout=120)
            assert "Traceback" not in v.stdout + v.stderr, v.stderr
            assert v.stdout.startswith("{"), v.stdout + v.stderr
            return v.returncode, json.loads(v.stdout)

        rc, report = verify(tmp_path / "c1" / "chain.pem")
        steps = {s["name"]: s for s in report["steps"]}
        assert rc == 0, report
        assert steps["log_inclusion"]["result"] == "pass"
        assert f"signed checkpoint of size {size1}" in steps["log_inclusion"]["detail"]
        assert steps["anchor"]["result"] == "pass" and f"checkpoint of size {size1} is anchored in block" in \
            steps["anchor"]["detail"], steps["anchor"]
        assert steps["anchor_contract"]["result"] == "warn" and "not pinned" in steps["anchor_contract"]["detail"]

        # a proof under a later checkpoint (size > size2, never anchored): consistent with the anchor
        latest = requests.get(f"{url}/v1/certificates/{serial1}/proof", timeout=10).text
        later_size = int(latest.partition("\n\n")[2].split("\n")[1])
        assert later_size > size2
        (tmp_path / "later.txt").write_text(latest)
        contract = json.loads(requests.get(f"{url}/v1/anchors/latest", timeout=10).text)["contract"]
        rc, report = verify(tmp_path / "c1" / "chain.pem", "--proof", str(tmp_path / "later.txt"),
                            "--contract", contract)
        steps = {s["name"]: s for s in report["steps"]}
        assert rc == 0, report
        assert steps["anchor_contract"]["result"] == "pass"
        assert steps["anchor"]["result"] == "pass", steps["anchor"]
        assert f"checkpoint of size {later_size} is consistent" in steps["anchor"]["detail"]
        assert f"checkpoint of size {size1} anchored" in steps["anchor"]["detail"]

        # the server serves proofs under any published size, and says clearly when it cannot
        at1 = requests.get(f"{url}/v1/certificates/{serial1}/proof?size={size1}", timeout=10)
        assert at1.status_code == 200 and at1.text.partition("\n\n")[2].split("\n")[1] == str(size1)
        for bad, code in ((str(idx1), "log.proof_unavailable"), ("abc", "log.proof_unavailable"),
                          (str(later_size + 1000), "log.not_checkpointed")):
            r = requests.get(f"{url}/v1/certificates/{serial1}/proof?size={bad}", timeout=10)
            assert r.headers["Content-Type"].startswith("application/problem+json"), (bad, r.status_code)
            assert r.json()["code"] == code and r.status_code in (400, 404), (bad, r.json())

        # the certificate issued after the last anchor: no anchor covers it yet, a failure that says so
        rc, report = verify(tmp_path / "c5" / "chain.pem")
        steps = {s["name"]: s for s in report["steps"]}
        assert rc == 1 and steps["log_inclusion"]["result"] == "pass"
        assert steps["anchor"]["result"] == "fail" and f"covers leaf {idx5} yet" in steps["anchor"]["detail"]

        # a contract pin that is not the anchor contract (the publisher's own account): refused
        from eth_account import Account

        rc, report = verify(tmp_path / "c1" / "chain.pem", "--contract", Account.from_key(DEV_KEY).address)
        steps = {s["name"]: s for s in report["steps"]}
        assert rc == 1 and steps["anchor_contract"]["result"] == "fail"
        assert "is not the CheckpointAnchor contract" in steps["anchor_contract"]["detail"]

        # a forged log key: the proof fetched under the anchored checkpoint does not verify
        from cryptography.hazmat.primitives.asymmetric import ed25519

        from ca_service.tlog.checkpoint import NoteVerifier
        forged = NoteVerifier(vkey.split("+")[0], ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
        v = subprocess.run([*base[:4], str(tmp_path / "c1" / "chain.pem"), *base[4:]], env=clean,
                           capture_output=True, text=True, timeout=120)
        assert v.returncode == 0
        args = [*base[:4], str(tmp_path / "c1" / "chain.pem"), *base[4:]]
        args[args.index("--log-vkey") + 1] = forged.vkey
        bad = subprocess.run(args, env=clean, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1
        assert {s["name"]: s["result"] for s in json.loads(bad.stdout)["steps"]}["log_inclusion"] == "fail"
        assert serial4

        # the documented data owner's script (Python API) does the same, with the chain
        from tests.integration.test_relying_party_docs import run_script

        (tmp_path / "data.key").write_bytes(b"patient-data-key")
        owner = run_script(tmp_path, tmp_path / "c1" / "chain.pem", tmp_path / "data.key", tmp_path / "data.sealed",
                           {**clean, "PINNED_ROOT": str(home / "root.pem"), "PINNED_LOG_VKEY": vkey,
                            "CHAIN_RPC": node.url, "PINNED_CONTRACT": contract,
                            "PINNED_SIM_ROOT": str(home / "sim-root.pem")})
        assert owner.returncode == 0, owner.stdout + owner.stderr
        assert f"recipient pass anchor: the checkpoint of size {size1} is anchored" in owner.stdout, owner.stdout
        assert "recipient pass anchor_contract:" in owner.stdout and (tmp_path / "data.sealed").exists()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        node.stop()
