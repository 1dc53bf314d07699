"""docs/relying-party.md's data owner's script, run exactly as printed against a served CA: it
checks the CA's attestation and the recipient's certificate, seals, and the recipient unseals with
the key `agent request` wrote; after `ca-service revoke` the same script refuses and writes nothing,
and so do `ca-service verify` and `ca-service seal`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from tests.integration.test_http_cli import CLI, server  # noqa: F401  (the served CA fixture)

DOC = Path(__file__).resolve().parents[2] / "docs" / "relying-party.md"


def data_owner_script() -> str:
    text = DOC.read_text()
    section = text[text.index("## A data owner's script"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m is not None, "docs/relying-party.md lost its data owner's script"
    return m.group(1)


def run_script(tmp_path: Path, chain: Path, data: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "data_owner.py"
    script.write_text(data_owner_script())
    return subprocess.run([sys.executable, str(script), str(chain), str(data), str(out)], env=env,
                          capture_output=True, text=True, timeout=180)


def test_the_documented_script_seals_then_refuses_after_revocation(server, tmp_path):  # noqa: F811
    home, url = server["home"], server["url"]
    out = tmp_path / "cvm"
    p = subprocess.run([*CLI, "agent", "request", "--server", url, "--policy", "sim", "--out", str(out), "--sim"],
                       env=server["env"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    serial = json.loads((out / "response.json").read_text())["serial"]
    # the log publishes a checkpoint covering the new certificate within the serve interval
    vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    env.update({"PINNED_ROOT": str(home / "root.pem"), "PINNED_LOG_VKEY": vkey,
                "PINNED_SIM_ROOT": str(home / "sim-root.pem"), "EXPECT": "tee=sim policy=sim"})
    secret = os.urandom(100_000)
    (tmp_path / "data.key").write_bytes(secret)
    for _ in range(60):
        if requests.get(f"{url}/v1/certificates/{serial}/proof", timeout=10).status_code == 200:
            break
        import time

        time.sleep(0.5)
    ok = run_script(tmp_path, out / "chain.pem", tmp_path / "data.key", tmp_path / "data.sealed", env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for line in ("ca        pass binding:", "ca        pass evidence:", "recipient pass revocation: OCSP",
                 "recipient pass expect tee:", "recipient pass expect policy:", "recipient pass log_inclusion:",
                 "recipient warn profile:"):
        assert line in ok.stdout, ok.stdout
    assert "anchor" not in ok.stdout  # no CHAIN_RPC: no anchor step, and none reported as passed
    opened = subprocess.run([*CLI, "unseal", "--key", str(out / "key.pem"), str(tmp_path / "data.sealed"),
                             str(tmp_path / "data.opened")], env=server["env"], capture_output=True, text=True)
    assert opened.returncode == 0, opened.stderr
    assert (tmp_path / "data.opened").read_bytes() == secret

    # revoke: the documented script, `verify` and `seal` all refuse, and nothing is written
    r = subprocess.run([*CLI, "revoke", serial, "--reason", "keyCompromise"], env=server["env"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    refused = run_script(tmp_path, out / "chain.pem", tmp_path / "data.key", tmp_path / "again.sealed", env)
    assert refused.returncode == 1 and "refused: nothing was sealed" in refused.stderr
    assert "recipient fail revocation: REVOKED" in refused.stdout and "keyCompromise" in refused.stdout
    assert not (tmp_path / "again.sealed").exists()
    verify = subprocess.run([*CLI, "verify", str(out / "chain.pem"), "--root", str(home / "root.pem"),
                             "--accept-insecure"], env=server["env"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 1 and "REVOKED" in verify.stdout
    seal = subprocess.run([*CLI, "seal", "--to", str(out / "chain.pem"), "--root", str(home / "root.pem"),
                           "--accept-insecure", str(tmp_path / "data.key"), str(tmp_path / "cli.sealed")],
                          env=server["env"], capture_output=True, text=True, timeout=60)
    assert seal.returncode == 1 and "seal: refused" in seal.stderr and not (tmp_path / "cli.sealed").exists()
