"""`ca-service agent request` on a (fake) TDX guest, against a CA served over HTTP: the quote comes from
configfs-tsm, the CCEL is sent when the policy needs it, and the CA replays it. The quote and CCEL are
the real bytes of tdx-eventlog/gce-cos113-ccel, so the CA's last word is binding.mismatch (that quote
binds someone else's key) once the log has replayed, or event_log_mismatch when it does not."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from werkzeug.serving import make_server

from ca_service.api.app import create_app
from ca_service.cli.main import cli
from ca_service.clock import FixedClock
from ca_service.services import policies
from tests.unit.agent.fake_tsm import FakeConfigfs, fake_ccel
from tests.vectors.manifest import vectors_dir, vectors_for

V = {v.path: v for v in vectors_for("tdx-eventlog")}
GCE, NEG = V["tdx-eventlog/gce-cos113-ccel"], V["tdx-eventlog/neg-gce-cos113-other-boot"]
ANY = "name: tdx-any-agent\nevidence:\n  required: [tdx-quote]\n  tdx-quote:\n    tcb_status: [UpToDate]\n" \
      "certificate:\n  max_lifetime: 1h\n"
LOADER = ANY.replace("tdx-any-agent", "tdx-loader-agent").replace(
    "    tcb_status: [UpToDate]\n", "    tcb_status: [UpToDate]\n    loader_digests: [\"sha384:" + "ab" * 48 + "\"]\n")


@pytest.fixture(scope="module")
def ca(tmp_path_factory, db_url_factory) -> Iterator[str]:
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory())
    init_ca(settings)
    svc = Services.create(settings, clock=FixedClock(GCE.verify_time))
    for doc in (ANY, LOADER):
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        policies.activate(svc, ref.policy.name, ref.version, actor="test")
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_port}"
    # the CA learns this platform's collateral once (request collateral fills what it lacks)
    coll = (vectors_dir() / GCE.expected["dcap"][0]["collateral_ref"]).read_bytes()
    r = requests.post(f"{url}/v1/attestations", timeout=60, json={"policy": "tdx-any-agent", "evidence": [
        {"type": "tdx-quote", "data": base64.b64encode(GCE.read("quote")).decode(),
         "collateral": [base64.b64encode(coll).decode()]}]})
    assert r.status_code == 200 and r.json()["appraisal"]["passed"] is True, r.text
    try:
        yield url
    finally:
        server.shutdown()
        t.join(5)
        svc.close()


def _agent(url: str, policy: str, fs: FakeConfigfs, ccel: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["agent", "request", "--server", url, "--policy", policy, "--out", str(out),
                                    "--tsm-root", str(fs.root), "--ccel", str(ccel), *extra])


def test_needs_says_which_policy_wants_the_log(ca):
    r = requests.get(f"{ca}/v1/attestations/needs", params={"policy": "tdx-loader-agent"}, timeout=30).json()
    assert r["items"] == {"tdx-quote": {"event_log": True}} and r["policy"]["name"] == "tdx-loader-agent"
    r = requests.get(f"{ca}/v1/attestations/needs", params={"policy": "tdx-any-agent"}, timeout=30).json()
    assert r["items"] == {"tdx-quote": {"event_log": False}}
    missing = requests.get(f"{ca}/v1/attestations/needs", params={"policy": "nope"}, timeout=30)
    assert missing.status_code == 404 and missing.json()["code"] == "policy.not_found"


def test_ccel_is_sent_and_replayed_when_the_policy_needs_it(ca, tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    res = _agent(ca, "tdx-loader-agent", fs, fake_ccel(tmp_path, GCE.read("ccel")), tmp_path / "out")
    assert res.exit_code == 1
    assert "tdx-quote from configfs-tsm provider tdx_guest (8000 bytes)" in res.output
    assert "event log: CCEL from" in res.output
    # the CA verified the quote and replayed the log; what is left is the vector's foreign binding
    assert "[binding.mismatch]" in res.output, res.output
    assert len(fs.inblobs) == 1 and len(fs.inblobs[0]) == 64


def test_the_log_of_another_boot_is_refused_by_the_ca(ca, tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", NEG.read("quote")).install(monkeypatch)
    res = _agent(ca, "tdx-loader-agent", fs, fake_ccel(tmp_path, NEG.read("ccel")), tmp_path / "out")
    assert res.exit_code == 1 and "[evidence.event_log_mismatch]" in res.output and "RTMR0" in res.output


def test_no_log_when_the_policy_does_not_need_it(ca, tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", NEG.read("quote")).install(monkeypatch)
    res = _agent(ca, "tdx-any-agent", fs, fake_ccel(tmp_path, NEG.read("ccel")), tmp_path / "out")
    assert res.exit_code == 1
    assert "event log: not sent (the policy does not need it)" in res.output
    assert "[binding.mismatch]" in res.output  # the other boot's log was not sent, so not refused
    forced = _agent(ca, "tdx-any-agent", fs, fake_ccel(tmp_path / "2", NEG.read("ccel")), tmp_path / "out",
                    "--event-log", "always")
    assert "[evidence.event_log_mismatch]" in forced.output


def test_no_configfs_tsm_is_said_plainly(ca, tmp_path: Path):
    res = CliRunner().invoke(cli, ["agent", "request", "--server", ca, "--policy", "tdx-any-agent", "--out",
                                   str(tmp_path / "o"), "--tsm-root", str(tmp_path / "none")])
    assert res.exit_code == 1 and "no configfs-tsm here" in res.output
