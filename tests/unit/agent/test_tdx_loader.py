"""The loader on a TDX guest, against a fake kernel tree holding a real quote and its real CCEL:
RTMR3 is extended before an event is recorded, and the one log it sends is the CCEL (converted to
the dstack shape) followed by its runtime events, replaying the real quote's RTMR0-3."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from ca_service.agent import tdx_loader
from ca_service.agent.client import AgentError
from ca_service.agent.loader import Measured
from ca_service.evidence.eventlog import parse_event_log, replay
from ca_service.evidence.intel.parse import parse_quote
from ca_service.evidence.sim.eventlog import load_event
from tests.unit.agent.fake_tsm import FakeConfigfs, fake_ccel
from tests.vectors.manifest import vectors_for

GCE = {v.path: v for v in vectors_for("tdx-eventlog")}["tdx-eventlog/gce-cos113-ccel"]
ENGINE = Measured("engine", "sha384:" + hashlib.sha384(b"engine").hexdigest())
ARGS = Measured("args", "sha384:" + hashlib.sha384(b"--epochs 3").hexdigest())


def _rtmr3(base: Path) -> Path:
    path = base / "sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return path


def test_measure_extends_then_records(tmp_path: Path):
    rtmr3, log = _rtmr3(tmp_path), tmp_path / "run/rtmr3-events.json"
    notes = tdx_loader.measure([ENGINE], rtmr3=rtmr3, log=log)
    assert rtmr3.read_bytes() == load_event("engine", ENGINE.digest).digest  # the 48 bytes, one write
    assert notes == [f"measured engine {ENGINE.digest} into RTMR3"]
    tdx_loader.measure([ARGS], rtmr3=rtmr3, log=log)
    assert rtmr3.read_bytes() == load_event("args", ARGS.digest).digest
    assert tdx_loader.read_runtime_log(log) == [load_event("engine", ENGINE.digest).to_json(),
                                                load_event("args", ARGS.digest).to_json()]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_no_rtmr3_attribute_records_nothing(tmp_path: Path):
    log = tmp_path / "run/rtmr3-events.json"
    with pytest.raises(AgentError, match="cannot extend RTMR3"):
        tdx_loader.measure([ENGINE], rtmr3=tmp_path / "no/such/rtmr3:sha384", log=log)
    assert not log.exists()


def test_source_sends_the_ccel_and_the_runtime_events(tmp_path: Path, monkeypatch):
    fake = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    ccel = fake_ccel(tmp_path, GCE.read("ccel"))
    log = tmp_path / "run/rtmr3-events.json"
    quote_rtmrs = parse_quote(GCE.read("quote")).body.rtmr
    source = tdx_loader.TdxLoaderSource(root=fake.root, ccel_path=ccel, runtime_log=log)
    rd = bytes(range(64))
    kind, quote, extra = source(rd)
    assert (kind, quote, fake.inblobs) == ("tdx-quote", GCE.read("quote"), [rd])
    sent = base64.b64decode(extra["event_log"])
    assert sent.startswith(b"[")  # one dstack JSON log
    assert replay(parse_event_log(sent), quote_rtmrs).matches == (True, True, True, True)  # the real TD's boot
    # after the loader measured: the same boot records, then its event; RTMR3 now differs from this quote's
    tdx_loader.measure([ENGINE], rtmr3=_rtmr3(tmp_path), log=log)
    _, _, extra = source(rd)
    events = json.loads(base64.b64decode(extra["event_log"]))
    assert events[-1] == load_event("engine", ENGINE.digest).to_json() and events[:-1] == json.loads(sent)
    assert replay(parse_event_log(base64.b64decode(extra["event_log"])), quote_rtmrs).matches == (
        True, True, True, False)
    assert "+ 1 runtime events" in source.notes[-1]


def test_source_refuses_a_missing_or_broken_ccel(tmp_path: Path, monkeypatch):
    fake = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    source = tdx_loader.TdxLoaderSource(root=fake.root, ccel_path=tmp_path / "none", runtime_log=tmp_path / "l.json")
    with pytest.raises(AgentError, match="needs the TD's event log"):
        source(bytes(64))
    bad = fake_ccel(tmp_path, GCE.read("ccel")[:1000])
    with pytest.raises(AgentError, match="evidence.event_log_malformed"):
        tdx_loader.TdxLoaderSource(root=fake.root, ccel_path=bad, runtime_log=tmp_path / "l.json")(bytes(64))


def test_source_refuses_snp_evidence(tmp_path: Path, monkeypatch):
    snp = {v.path: v for v in vectors_for("snp")}["snp/milan-virtee-vcek"]
    fake = FakeConfigfs(tmp_path, "sev_guest", snp.read("report")).install(monkeypatch)
    source = tdx_loader.TdxLoaderSource(root=fake.root, ccel_path=tmp_path / "none", runtime_log=tmp_path / "l.json")
    with pytest.raises(AgentError, match="HOST_DATA or the launch measurement"):
        source(bytes(64))


def test_cli_without_configfs_says_so(tmp_path: Path):
    from click.testing import CliRunner

    from ca_service.cli.agent import agent

    out = CliRunner().invoke(agent, ["loader-request", "--server", "http://127.0.0.1:9", "--policy", "p", "--out",
                                     str(tmp_path / "o"), "--tsm-root", str(tmp_path / "none"),
                                     "--component", f"engine={ENGINE.digest}"])
    assert out.exit_code == 1 and "no configfs-tsm here" in out.output
    assert not (tmp_path / "o").exists()
