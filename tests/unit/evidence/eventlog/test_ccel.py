"""CCEL (TCG crypto-agile) parsing: padding, unknown types, and one refusal code per broken record."""

from __future__ import annotations

import hashlib
import struct

import pytest

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogUnsupported
from ca_service.evidence.eventlog import parse_event_log, replay
from ca_service.evidence.eventlog.ccel import parse_ccel
from tests.unit.evidence.eventlog import builders as b
from tests.vectors.manifest import vectors_for

GCE = {v.path: v for v in vectors_for("tdx-eventlog")}["tdx-eventlog/gce-cos113-ccel"]


def test_both_paddings_end_the_log():
    recs = [b.record(1, 0x80000007, b"Calling EFI Application"), b.record(4, 4, bytes(4))]
    for pad in (0xFF, 0x00):
        log = parse_ccel(b.ccel(recs, pad=pad))
        assert [e.type for e in log.events] == ["EV_NO_ACTION", "EV_EFI_ACTION", "EV_SEPARATOR"]
        assert [e.register for e in log.events] == [None, 0, 3]
    # no padding at all (a log cut exactly at its end) parses the same
    assert len(parse_ccel(b.ccel(recs, area=0)).events) == 3


def test_unknown_event_types_are_kept_and_replayed():
    log = parse_ccel(b.ccel([b.record(2, 0x12345678, b"vendor"), b.record(2, 0x80000099, b"x")]))
    assert [e.type for e in log.events[1:]] == ["UNKNOWN(0x12345678)", "UNKNOWN(0x80000099)"]
    regs = [bytes(48)] * 4
    b.extend(regs, 1, hashlib.sha384(b"vendor").digest())
    b.extend(regs, 1, hashlib.sha384(b"x").digest())
    assert all(replay(log, regs).matches)


def test_sha256_and_sha384_banks_replay_the_sha384_one():
    algs = (b.SHA256, b.SHA384)
    log = parse_ccel(b.ccel([b.record(1, 4, bytes(4), algs)], algs))
    assert log.events[1].digest == hashlib.sha384(bytes(4)).digest()


def test_no_action_records_are_not_extended():
    log = parse_ccel(b.ccel([b.record(0, 3, b"StartupLocality\x00\x03"), b.record(1, 4, bytes(4))]))
    assert log.events[1].register is None and log.events[1].digest == b""
    regs = [bytes(48)] * 4
    b.extend(regs, 0, hashlib.sha384(bytes(4)).digest())
    assert all(replay(log, regs).matches)


def test_truncated_record_is_refused():
    full = b.ccel([b.record(1, 0x80000007, b"Calling EFI Application")], area=0)
    for cut in (len(full) - 1, len(full) - 10, len(b.header()) + 5):
        with pytest.raises(EventLogMalformed) as exc:
            parse_ccel(full[:cut])
        assert exc.value.code == "evidence.event_log_malformed" and exc.value.fields["field"] == "record[1]"


def test_garbage_after_the_log_is_refused():
    data = b.ccel([b.record(1, 4, bytes(4))]) + b"\x01"
    with pytest.raises(EventLogMalformed):
        parse_ccel(data)


def test_a_real_log_cut_mid_record_is_refused():
    raw = GCE.read("ccel")
    end = len(raw.rstrip(b"\xff"))
    with pytest.raises(EventLogMalformed):
        parse_ccel(raw[: end - 60] + b"\xff" * 64)  # inside the last record's SHA-384 digest


def test_digest_count_must_match_the_header():
    rec = b.record(1, 4, bytes(4), (b.SHA256, b.SHA384))
    with pytest.raises(EventLogInconsistent) as exc:
        parse_ccel(b.ccel([rec]))  # header lists SHA-384 only
    assert exc.value.code == "evidence.event_log_inconsistent"


def test_digest_of_an_unlisted_algorithm_is_refused():
    rec = b.record(1, 4, bytes(4), (b.SHA256,))
    with pytest.raises(EventLogInconsistent):
        parse_ccel(b.ccel([rec]))


def test_register_index_out_of_range_is_refused():
    for mr in (0, 5, 0xFFFF):
        with pytest.raises(EventLogMalformed) as exc:
            parse_ccel(b.ccel([b.record(mr, 4, bytes(4))]))
        assert "register" in exc.value.detail


def test_log_without_sha384_is_unsupported():
    with pytest.raises(EventLogUnsupported) as exc:
        parse_ccel(b.ccel([b.record(1, 4, bytes(4), (b.SHA256,))], (b.SHA256,)))
    assert exc.value.code == "evidence.event_log_unsupported"


def test_first_record_must_be_the_spec_id_header():
    with pytest.raises(EventLogMalformed):
        parse_ccel(b.record(1, 4, bytes(4)) + b"\xff" * 64)
    bad = bytearray(b.ccel([]))
    bad[32:47] = b"Spec ID Event02"
    with pytest.raises(EventLogMalformed):
        parse_ccel(bytes(bad))
    with pytest.raises(EventLogMalformed):
        parse_event_log(b"")


def test_algorithm_listed_twice_or_with_a_wrong_size_is_refused():
    ev = b.spec_id((b.SHA384, b.SHA384))
    with pytest.raises(EventLogInconsistent):
        parse_ccel(struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(ev)) + ev)
    ev = bytearray(b.spec_id((b.SHA384,)))
    ev[30:32] = struct.pack("<H", 32)
    with pytest.raises(EventLogInconsistent):
        parse_ccel(struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(ev)) + bytes(ev))


def test_every_truncation_of_a_real_log_is_refused_or_replays_differently():
    """A seeded sample of cuts of the real GCE log: each is a code, never another exception."""
    raw = GCE.read("ccel")
    end = len(raw.rstrip(b"\xff"))
    for cut in range(40, end, 997):
        try:
            log = parse_ccel(raw[:cut])
        except (EventLogMalformed, EventLogInconsistent):
            continue
        assert len(log.events) < GCE.expected["n_events"]


def test_record_count_is_bounded():
    """A hostile 1 MiB log of minimal records is refused, and quickly (padding is not rescanned per record)."""
    import time

    from ca_service.evidence.eventlog.ccel import MAX_RECORDS

    rec = b.record(1, 4, b"")
    # this process's CPU time, not the wall clock: a loaded box stretches the latter, not the former
    # (the refusal takes ~0.03 s of CPU; rescanning the 1 MiB area per record is 10,000 x 1 MiB)
    t = time.process_time()
    with pytest.raises(EventLogMalformed, match="more than"):
        parse_ccel(b.ccel([rec] * (MAX_RECORDS + 5), area=1 << 20))
    assert time.process_time() - t < 5
    assert len(parse_ccel(b.ccel([rec] * 100, area=1 << 20)).events) == 101
