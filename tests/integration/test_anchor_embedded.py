"""The embedded default as the README runs it: `ca-service init`, `serve`, `agent request`, then two
`ca-service anchor --once` processes. The embedded chain is kept in CA_SERVICE_HOME, so both anchor
on one contract, `serve` lists both as final (confirmed on that chain), and `ca-service verify --rpc
embedded` checks the certificate's anchor on it. When the chain is gone, no anchor of it is final."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.ports import free_port as _free_port

CLI = [sys.executable, "-m", "ca_service.cli"]


def _run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def _actions(out: str) -> list[tuple[str, int | None]]:
    return [(d["action"], d["size"]) for d in map(json.loads, out.splitlines())]


@pytest.fixture
def served(tmp_path: Path):
    home = tmp_path / "ca"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    env.update({"CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev", "CA_SERVICE_PUBLIC_URL": url,
                "CA_SERVICE_RATE_LIMIT": "off", "PYTHONWARNINGS": "ignore"})
    _run(env, "init")
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--publish-interval",
                             "0.5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        yield {"url": url, "env": env, "home": home, "dir": tmp_path}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _checkpointed(url: str, size: int) -> None:
    deadline = time.monotonic() + 30
    while requests.get(f"{url}/v1/log/checkpoint", timeout=5).text.split("\n")[1] != str(size):
        assert time.monotonic() < deadline, "serve did not publish the checkpoint"
        time.sleep(0.2)


def test_anchors_of_two_processes_are_final_in_serve_and_verify_on_the_kept_chain(served) -> None:
    url, env, home, d = served["url"], served["env"], served["home"], served["dir"]
    _run(env, "agent", "request", "--server", url, "--policy", "sim", "--out", str(d / "cvm1"), "--sim")
    size1 = int(json.loads((d / "cvm1" / "response.json").read_text())["log_index"]) + 1
    _checkpointed(url, size1)
    first = _run(env, "anchor", "--once")
    assert _actions(first.stdout) == [("deployed", None), ("sent", size1), ("included", size1), ("final", size1)]
    assert (home / "chain" / "embedded-chain.jsonl").exists()
    assert oct((home / "chain" / "publisher.key").stat().st_mode)[-3:] == "600"

    _run(env, "agent", "request", "--server", url, "--policy", "sim", "--out", str(d / "cvm2"), "--sim")
    size2 = int(json.loads((d / "cvm2" / "response.json").read_text())["log_index"]) + 1
    _checkpointed(url, size2)
    second = _run(env, "anchor", "--once")       # another process: the same chain and contract, no deploy
    assert _actions(second.stdout) == [("sent", size2), ("included", size2), ("final", size2)]

    anchors = requests.get(f"{url}/v1/anchors", timeout=10).json()["anchors"]
    assert [(a["size"], a["state"]) for a in anchors] == [(size2, "final"), (size1, "final")], anchors
    assert len({a["contract"] for a in anchors}) == 1 and all(a["confirmed_at"] for a in anchors)
    contract = anchors[0]["contract"]

    vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
    for cvm, size in (("cvm1", size1), ("cvm2", size2)):
        v = _run(env, "verify", str(d / cvm / "chain.pem"), "--root", str(home / "root.pem"), "--accept-insecure",
                 "--accept-warning", "--server", url, "--log-vkey", vkey, "--rpc", "embedded", "--contract",
                 contract, ok=False)
        assert v.returncode == 0, v.stdout + v.stderr
        assert f"[ok] anchor: the checkpoint of size {size} is anchored" in v.stdout, v.stdout

    # the chain is gone (CA_SERVICE_HOME/chain moved away): nothing of it is served as final
    shutil.move(home / "chain", d / "chain.away")
    time.sleep(2.5)                              # the confirmation TTL (2 s)
    gone = requests.get(f"{url}/v1/anchors", timeout=10).json()["anchors"]
    assert {a["state"] for a in gone} == {"unconfirmed"}, gone
    assert all("embedded chain" in a["detail"] and "gone" in a["detail"] for a in gone), gone
    latest = requests.get(f"{url}/v1/anchors/latest", timeout=10).json()
    assert latest["state"] == "unconfirmed"
    v = _run(env, "verify", str(d / "cvm1" / "chain.pem"), "--root", str(home / "root.pem"), "--accept-insecure",
             "--accept-warning", "--server", url, "--log-vkey", vkey, "--rpc", "embedded", ok=False)
    assert v.returncode == 1 and "[FAIL] anchor: no embedded chain in" in v.stdout, v.stdout
    # and back: the same file, the same contract and anchors, final again
    shutil.move(d / "chain.away", home / "chain")
    time.sleep(2.5)
    back = requests.get(f"{url}/v1/anchors", timeout=10).json()["anchors"]
    assert [(a["size"], a["state"]) for a in back] == [(size2, "final"), (size1, "final")], back
