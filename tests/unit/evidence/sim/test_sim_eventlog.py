"""The sim TD's event log: dstack-shaped events whose replay is the report's RTMR0-3; loader events
follow docs/event-log.md byte for byte (checked against a real dstack log)."""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from datetime import UTC, datetime

import pytest

from ca_service.evidence import TrustRoots, verify
from ca_service.evidence.sim import eventlog
from ca_service.evidence.sim.attester import InsecureSimTee, InsecureSimTeeWarning, SimTd
from tests.vectors.manifest import vectors_dir

SEED = b"ca-service sim eventlog seed"
ENGINE = "sha384:" + hashlib.sha384(b"engine").hexdigest()


@pytest.fixture(scope="module")
def tee() -> InsecureSimTee:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSimTeeWarning)
        return InsecureSimTee.from_seed(SEED)


def _extend(reg: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(reg + digest).digest()


def test_report_rtmrs_are_the_replay_of_the_log(tee):
    td = SimTd(tee)
    td.measure("engine", ENGINE)
    report, log = td.evidence(b"\x07" * 64)
    ve = verify("sim", report, at=datetime(2026, 6, 1, tzinfo=UTC), roots=TrustRoots().with_sim_root(tee.root_der()))
    events = json.loads(log)
    regs = [b"\x00" * 48] * 4
    for e in events:  # an independent replay of the JSON as sent
        regs[e["imr"]] = _extend(regs[e["imr"]], bytes.fromhex(e["digest"]))
    assert [ve.claims[f"rtmr{i}"] for i in range(4)] == [r.hex() for r in regs]
    assert regs[3] != b"\x00" * 48


def test_loader_event_is_the_documented_runtime_event():
    e = eventlog.load_event("engine", ENGINE)
    want = hashlib.sha384(struct.pack("<I", 0x08000001) + b":ca-service.load.engine:" + ENGINE.encode()).digest()
    assert (e.imr, e.event_type, e.event, e.payload, e.digest) == (3, 0x08000001, "ca-service.load.engine",
                                                                   ENGINE.encode(), want)
    assert e.to_json()["event_payload"] == ENGINE.encode().hex()


def test_runtime_digest_matches_a_real_dstack_log():
    path = vectors_dir() / "tdx-eventlog" / "dstack-verifier-json" / "event_log.json"
    runtime = [e for e in json.loads(path.read_text()) if e["event_type"] == eventlog.RUNTIME_EVENT_TYPE]
    assert len(runtime) == 8
    for e in runtime:
        assert eventlog.runtime_digest(e["event"], bytes.fromhex(e["event_payload"])).hex() == e["digest"]


def test_measuring_leaves_rtmr0_2_and_extends_rtmr3(tee):
    booted = SimTd(tee).measurements()
    td = SimTd(tee)
    td.measure("loader", "sha256:" + "ab" * 32)
    after = td.measurements()
    assert (after.rtmr0, after.rtmr1, after.rtmr2) == (booted.rtmr0, booted.rtmr1, booted.rtmr2)
    assert booted.rtmr3 == b"\x00" * 48 and after.rtmr3 != booted.rtmr3
    assert SimTd(tee, eventlog.from_json_bytes(td.log_bytes())).measurements() == after


@pytest.mark.parametrize(("role", "digest"), [("Engine", ENGINE), ("engine", "sha384:" + "AB" * 48),
                                              ("engine", "md5:" + "ab" * 16), ("", ENGINE),
                                              ("engine", "sha384:" + "ab" * 47)])
def test_load_event_refuses_bad_roles_and_digests(role, digest):
    with pytest.raises(ValueError):
        eventlog.load_event(role, digest)
