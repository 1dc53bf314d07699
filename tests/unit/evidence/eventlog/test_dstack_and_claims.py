"""dstack JSON logs, runtime-event digests, the loader's ca-service.load.* events and the claims."""

from __future__ import annotations

import hashlib
import json

import pytest

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogMismatch
from ca_service.evidence.eventlog import claims, parse_event_log, replay, to_dstack_json
from tests.unit.evidence.eventlog import builders as b
from tests.vectors.manifest import vectors_for

V = {v.path: v for v in vectors_for("tdx-eventlog")}
NEAR = V["tdx-eventlog/nearmpc-dstack-json"]


def _boot() -> list[dict[str, object]]:
    return [e for e in json.loads(NEAR.read("event_log_json")) if e["imr"] != 3]


def _claims(events: list[dict[str, object]]) -> dict[str, object]:
    log = parse_event_log(b.dumps(events))
    return claims(replay(log, b.replay_json(events)))


def test_loader_events_become_loaded_digests():
    engine, data = b"engine image", b"dataset"
    events = [*_boot(), b.load_event("loader", b"loader binary"), b.load_event("engine", engine),
              b.load_event("dataset", data)]
    c = _claims(events)
    want = [f"sha384:{hashlib.sha384(x).hexdigest()}" for x in (b"loader binary", engine, data)]
    assert c["loaded_digests"] == want
    assert [x["role"] for x in c["loaded"]] == ["loader", "engine", "dataset"]  # type: ignore[attr-defined]
    assert c["event_log_format"] == "dstack-json"
    last = c["event_log"][-1]  # type: ignore[index]
    assert last["imr"] == 3 and last["type"] == "DSTACK_RUNTIME_EVENT" and last["name"] == "ca-service.load.dataset"
    assert last["description"] == f"ca-service.load.dataset: {want[2]}"
    assert [r["name"] for r in c["runtime_events"]][-3:] == [  # type: ignore[attr-defined]
        "ca-service.load.loader", "ca-service.load.engine", "ca-service.load.dataset"]


def test_a_swapped_payload_under_the_same_digest_is_refused():
    ev = b.load_event("engine", b"engine image")
    ev["event_payload"] = f"sha384:{hashlib.sha384(b'other engine').hexdigest()}".encode().hex()
    with pytest.raises(EventLogInconsistent) as exc:
        parse_event_log(b.dumps([*_boot(), ev]))
    assert exc.value.code == "evidence.event_log_inconsistent"
    renamed = b.load_event("engine", b"engine image")
    renamed["event"] = "ca-service.load.dataset"
    with pytest.raises(EventLogInconsistent):
        parse_event_log(b.dumps([renamed]))


@pytest.mark.parametrize("payload", [b"sha384:" + b"0" * 95, b"md5:" + b"0" * 32, b"SHA384:" + b"a" * 96,
                                     b"\xff\xfe", hashlib.sha384(b"raw").digest()])
def test_load_event_payload_must_be_alg_colon_hex(payload: bytes):
    with pytest.raises(EventLogMalformed):
        _claims([b.runtime_event("ca-service.load.engine", payload)])


def test_load_event_role_is_checked():
    with pytest.raises(EventLogMalformed):
        _claims([b.runtime_event("ca-service.load.Engine!", b"sha384:" + b"a" * 96)])


def test_load_events_must_extend_rtmr3():
    ev = b.load_event("engine", b"x")
    ev["imr"] = 2
    with pytest.raises(EventLogMalformed):
        _claims([ev])


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.update(imr=4), "imr"),
    (lambda e: e.update(imr=-1), "imr"),
    (lambda e: e.update(imr=True), "imr"),
    (lambda e: e.update(digest="zz"), "digest"),
    (lambda e: e.update(digest="00" * 32), "digest"),
    (lambda e: e.update(event_payload=5), "event_payload"),
    (lambda e: e.pop("event_type"), None),
    (lambda e: e.update(event_type=1 << 32), "event_type"),
])
def test_malformed_json_events_are_refused(mutate, field):
    events = _boot()
    mutate(events[3])
    with pytest.raises(EventLogMalformed) as exc:
        parse_event_log(b.dumps(events))
    assert exc.value.fields["field"].startswith("event[3]")
    if field:
        assert exc.value.fields["field"] == f"event[3].{field}"


@pytest.mark.parametrize("doc", [b"[", b'{"imr": 0}', b"[1, 2]", b"[" * 100 + b"]" * 100, b'[{"imr": 0}]'])
def test_not_an_event_list_is_refused(doc: bytes):
    with pytest.raises(EventLogMalformed):
        parse_event_log(doc)


def test_mismatch_names_the_first_rtmr_that_differs():
    events = [*_boot(), b.load_event("engine", b"e")]
    log = parse_event_log(b.dumps(events))
    regs = b.replay_json(events)
    for i in range(4):
        wrong = list(regs)
        wrong[i] = bytes(48)
        with pytest.raises(EventLogMismatch) as exc:
            claims(replay(log, wrong))
        assert exc.value.code == "evidence.event_log_mismatch" and exc.value.fields["field"] == f"rtmr{i}"


def test_a_dropped_or_reordered_event_does_not_replay():
    events = [*_boot(), b.load_event("engine", b"e"), b.load_event("dataset", b"d")]
    regs = b.replay_json(events)
    for variant in (events[:-1], [*events[:-2], events[-1], events[-2]]):
        assert not all(replay(parse_event_log(b.dumps(variant)), regs).matches)


def test_ccel_converts_to_the_dstack_shape_and_replays_the_same():
    gce = V["tdx-eventlog/gce-cos113-ccel"]
    log = parse_event_log(gce.read("ccel"))
    converted = to_dstack_json(log)
    assert len(converted) == gce.expected["n_events"] - 1  # the Spec ID header is not an extend
    rtmrs = [bytes.fromhex(h) for h in gce.expected["quote_rtmrs"]]
    assert all(replay(parse_event_log(b.dumps(converted)), rtmrs).matches)
    # a loader on that TD appends its measurements to the converted boot events and extends RTMR3
    with_loader = [*converted, b.load_event("engine", b"engine")]
    c = claims(replay(parse_event_log(b.dumps(with_loader)), [*rtmrs[:3], b.replay_json(with_loader)[3]]))
    assert c["loaded_digests"] == [f"sha384:{hashlib.sha384(b'engine').hexdigest()}"]


def test_no_loader_events_means_an_empty_list():
    c = _claims(_boot())
    assert c["loaded_digests"] == [] and c["loaded"] == [] and c["runtime_events"] == []
