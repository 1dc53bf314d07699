"""Property tests: any mutation of a real log, and any JSON, gives a parse or an event-log code, never
another exception; a flipped byte inside a digest never replays to the quote."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogUnsupported
from ca_service.evidence.eventlog import parse_event_log, parse_ima, replay
from tests.vectors.manifest import vectors_for

V = {v.path: v for v in vectors_for("tdx-eventlog")}
GCE = V["tdx-eventlog/gce-cos113-ccel"]
RAW = GCE.read("ccel")
END = len(RAW.rstrip(b"\xff"))
QUOTE_RTMRS = [bytes.fromhex(h) for h in GCE.expected["quote_rtmrs"]]
CODES = (EventLogMalformed, EventLogInconsistent, EventLogUnsupported)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(pos=st.integers(0, END - 1), xor=st.integers(1, 255))
def test_a_flipped_byte_is_refused_or_does_not_replay_to_changed_registers(pos: int, xor: int):
    data = bytearray(RAW[:END + 64])
    data[pos] ^= xor
    try:
        log = parse_event_log(bytes(data))
    except CODES:
        return
    rep = replay(log, QUOTE_RTMRS)
    if all(rep.matches):
        # the byte was event data or a length that still parses into the same digests: the replay is the
        # quote's only if every extended digest is unchanged
        original = parse_event_log(RAW)
        assert [e.digest for e in log.events if e.register is not None] == [
            e.digest for e in original.events if e.register is not None]


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_are_a_code(data: bytes):
    for parse in (parse_event_log, parse_ima):
        try:
            parse(data)
        except CODES:
            pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=6),
                           max_leaves=20)


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(["imr", "event_type", "digest", "event", "event_payload", "x"]),
                                json_values, max_size=6), max_size=4))
def test_random_json_event_lists_are_a_code(doc):
    try:
        parse_event_log(json.dumps(doc).encode())
    except CODES:
        pass
