"""IMA runtime measurement lists replayed into RTMR2 beside the CCEL."""

from __future__ import annotations

import hashlib

import pytest

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogMismatch, EventLogUnsupported
from ca_service.evidence.eventlog import claims, parse_event_log, parse_ima, replay
from tests.unit.evidence.eventlog import builders as b
from tests.vectors.manifest import vectors_for

GCE = {v.path: v for v in vectors_for("tdx-eventlog")}["tdx-eventlog/gce-cos113-ccel"]


def _rtmrs_with(ima_digests: list[bytes]) -> list[bytes]:
    regs = [bytes.fromhex(h) for h in GCE.expected["quote_rtmrs"]]
    for d in ima_digests:
        b.extend(regs, 2, d)
    return regs


def _ascii(entries: list[tuple[bytes, str]]) -> bytes:
    lines = [f"10 {d.hex()} ima-ng sha384:{hashlib.sha384(p.encode()).hexdigest()} {p}" for d, p in entries]
    return ("\n".join(lines) + "\n").encode()


def test_ascii_list_replays_into_rtmr2_after_the_ccel():
    d1, d2 = hashlib.sha384(b"boot_aggregate").digest(), hashlib.sha384(b"/usr/bin/engine").digest()
    ima = parse_ima(_ascii([(d1, "boot_aggregate"), (d2, "/usr/bin/engine")]))
    assert ima.format == "ima-ascii" and len(ima.entries) == 2
    log = parse_event_log(GCE.read("ccel"))
    rep = replay(log, _rtmrs_with([d1, d2]), ima)
    assert rep.matches == (True, True, True, True)
    c = claims(rep)
    assert c["event_log_format"] == "ccel+ima" and c["ima_log"]["entries"] == 2  # type: ignore[index]
    # without the IMA list, RTMR2 of that TD does not replay
    with pytest.raises(EventLogMismatch) as exc:
        claims(replay(log, _rtmrs_with([d1, d2])))
    assert exc.value.fields["field"] == "rtmr2"


def test_violation_extends_all_ones():
    ima = parse_ima(_ascii([(bytes(48), "/tmp/open-writers")]))
    rep = replay(parse_event_log(GCE.read("ccel")), _rtmrs_with([b"\xff" * 48]), ima)
    assert all(rep.matches)


def test_binary_list_recomputes_template_digests():
    raw = b.ima_binary_entry("boot_aggregate", b"agg") + b.ima_binary_entry("/usr/bin/engine", b"ELF")
    ima = parse_ima(raw)
    assert ima.format == "ima-binary"
    assert ima.entries[1].fields == (f"sha384:{hashlib.sha384(b'ELF').hexdigest()}", "/usr/bin/engine")
    rep = replay(parse_event_log(GCE.read("ccel")), _rtmrs_with([e.template_hash for e in ima.entries]), ima)
    assert all(rep.matches)
    tampered = bytearray(raw)
    tampered[-3] ^= 1  # one byte of the second entry's file name
    with pytest.raises(EventLogInconsistent):
        parse_ima(bytes(tampered))
    with pytest.raises(EventLogMalformed):
        parse_ima(raw[:-2])


def test_sha1_list_legacy_template_and_other_pcrs_are_unsupported():
    with pytest.raises(EventLogUnsupported):
        parse_ima(f"10 {'ab' * 20} ima-ng sha1:{'cd' * 20} /bin/sh\n".encode())
    with pytest.raises(EventLogUnsupported):
        parse_ima(b.ima_binary_entry("/bin/sh", b"x", template="ima"))
    with pytest.raises(EventLogUnsupported):
        parse_ima(b.ima_binary_entry("/bin/sh", b"x", pcr=4))
    with pytest.raises(EventLogMalformed):
        parse_ima(b"10 nothex ima-ng x y\n")
