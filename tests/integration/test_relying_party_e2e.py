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
        for _ in range(300):
            try:
                if requests.get(f"{url}/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
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
                         "status": "pass", "log_leaf": "pass", "log_inclusion": "pass", "anchor": "pass"}, report
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
