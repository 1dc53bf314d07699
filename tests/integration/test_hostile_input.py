"""Hostile input never crashes a worker (issue 11 section 5), driven as an attacker would: over
HTTP against a real ``ca-service serve`` (gunicorn) in the production profile, and through the
public entry point in an interpreter whose recursion limit was raised as web3 / py_ecc raise it.

Before the fix a 200 KB ``[[[[...`` body killed the gunicorn worker with SIGSEGV: py_ecc, imported
with the anchor code, set the recursion limit to 100,000 and the JSON decoder recursed past the C
stack.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from tests.integration.test_serve_faults import _children, _free_port, _wait_ready
from tests.vectors.manifest import vectors_dir

CLI = [sys.executable, "-m", "ca_service.cli"]
VECTOR = str(vectors_dir() / "tdx" / "dcapqvl-v4-uptodate")
DEEP = b"[" * 200_000
BOMB = "\n".join(
    ['name: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


@pytest.fixture(scope="module")
def prod_server(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("hostile")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "production",
           "CA_SERVICE_DATABASE_URL": db_url_factory()}
    init = subprocess.run([*CLI, "init", "--outside-tee"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    tok = subprocess.run([*CLI, "token", "create", "--role", "admin"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert tok.returncode == 0, tok.stderr
    token = tok.stdout.strip().splitlines()[-1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "--publish-interval", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_ready(url, proc)
        deadline = time.time() + 20
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        yield url, proc, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _problem(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["code"] == code


def test_deep_json_bodies_are_4xx_and_the_workers_survive(prod_server):
    url, proc, token = prod_server
    policy = ("name: hostile-tdx\nevidence:\n  required: [tdx-quote]\n  tdx-quote:\n    tcb_status: [UpToDate]\n"
              "certificate:\n  max_lifetime: 1h\n")
    resp = requests.post(url + "/v1/policies?activate=true", data=policy.encode(), timeout=30,
                         headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {token}"})
    assert resp.status_code in (200, 201), resp.text[:500]
    workers = sorted(_children(proc.pid))
    assert len(workers) == 2
    quote = open(f"{VECTOR}/quote.bin", "rb").read()
    for _ in range(3):  # more than once per worker
        for path in ("/v1/attestations", "/v1/certificates"):
            resp = requests.post(url + path, data=DEEP, headers={"Content-Type": "application/json"}, timeout=30)
            _problem(resp, 400, "request.malformed_json")
            assert "deeper than" in resp.json()["detail"]
        # the same bomb as base64 collateral inside a normal-looking body, under a policy that exists
        # (an unknown policy is refused before any collateral is read)
        body = {"policy": "hostile-tdx", "evidence": [{"type": "tdx-quote", "data": base64.b64encode(quote).decode(),
                                                       "collateral": [base64.b64encode(b'{"tcbInfo":' * 60_000).decode()]}]}
        resp = requests.post(url + "/v1/attestations", json=body, timeout=30)
        _problem(resp, 422, "evidence.collateral_invalid")
    assert sorted(_children(proc.pid)) == workers, "a worker died and was replaced"
    assert requests.get(url + "/healthz", timeout=5).status_code == 200


def test_policy_alias_bomb_is_refused_at_once(prod_server):
    url, proc, token = prod_server
    t0 = time.monotonic()
    resp = requests.post(url + "/v1/policies", data=BOMB.encode(), timeout=30,
                         headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {token}"})
    _problem(resp, 422, "policy.invalid")
    assert "aliases" in resp.json()["detail"]
    assert time.monotonic() - t0 < 5


def test_entry_point_with_a_raised_recursion_limit_refuses_deep_collateral():
    """Through ``ca_service.evidence.verify``, after py_ecc raised the limit (a relying party's
    application may import web3 itself): refused with a code, no crash."""
    script = textwrap.dedent(f"""
        import datetime, sys
        import py_ecc  # sets the recursion limit to 100,000
        assert sys.getrecursionlimit() >= 100_000
        from ca_service.evidence import verify
        from ca_service.errors import CAServiceError
        quote = open("{VECTOR}/quote.bin", "rb").read()
        at = datetime.datetime(2025, 7, 4, 10, 16, 31, tzinfo=datetime.UTC)
        for bomb in (b"[" * 200_000, b'{{"tcbInfo":' * 100_000, b'{{"a": "' + b"[" * 100_000 + b'"}}'):
            try:
                verify("tdx-quote", quote, collateral=[bomb], at=at)
                print("accepted")
            except CAServiceError as exc:
                print(exc.code)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    codes = out.stdout.split()
    assert len(codes) == 3 and "accepted" not in codes, codes
    assert all(c.startswith("evidence.") for c in codes), codes


def test_no_import_changes_the_recursion_limit_of_the_request_path(tmp_path):
    """The API process imports the anchor code (web3 -> py_ecc); the limit stays Python's default."""
    script = textwrap.dedent(f"""
        import sys
        before = sys.getrecursionlimit()
        from pathlib import Path
        from ca_service.api.app import create_app
        from ca_service.config import Settings
        create_app(Settings(home=Path({str(tmp_path)!r}), profile="production"))
        import ca_service.anchor.chain, ca_service.anchor.worker, ca_service.services.anchoring, ca_service.cli.main
        import web3, eth_account
        print(before, sys.getrecursionlimit(), "web3" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, web3_loaded = out.stdout.split()
    assert web3_loaded == "True"
    assert after == before == "1000"


def test_the_embedded_chain_does_not_change_the_recursion_limit_of_the_request_path(tmp_path):
    """py-evm (eth_tester's backend) raises the limit to 12,288 when imported. The API process
    imports it lazily: ``GET /v1/anchors`` confirms final anchors on the embedded chain (the default)
    through ``existing_embedded_chain``, so after the first such request every later request of that
    worker ran under the raised limit. Both lazy ways in (the embedded chain kept in the home, and
    the in-process chain) keep Python's default."""
    script = textwrap.dedent(f"""
        import sys, warnings
        from pathlib import Path
        warnings.simplefilter("ignore")
        before = sys.getrecursionlimit()
        from ca_service.api.app import create_app
        from ca_service.config import Settings
        create_app(Settings(home=Path({str(tmp_path)!r}), profile="production"))
        assert "eth" not in sys.modules  # py-evm is not imported until a chain is used
        from ca_service.anchor.chain import ChainClient, existing_embedded_chain
        ChainClient.embedded_in(Path({str(tmp_path)!r}), create=True)  # what `anchor` makes in the home
        reader = existing_embedded_chain(Path({str(tmp_path)!r}))  # what the API's confirmer reads
        assert reader is not None and reader.chain_id
        ChainClient.in_process()
        print(before, sys.getrecursionlimit(), "eth" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, evm_loaded = out.stdout.split()
    assert evm_loaded == "True"
    assert after == before == "1000"
