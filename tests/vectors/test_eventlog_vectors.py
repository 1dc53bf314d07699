"""Real TDX quotes with the event logs captured from the same TD (../shared/vectors/tdx-eventlog):
every vector gives its expected outcome, as of its verify_time, with the collateral it names."""

from __future__ import annotations

from collections import Counter

import pytest

from ca_service.errors import EventLogMismatch
from ca_service.evidence import verify
from ca_service.evidence.eventlog import claims, parse_event_log, replay
from ca_service.evidence.intel.parse import parse_quote
from tests.vectors.manifest import Vector, vectors_dir, vectors_for

VECTORS = vectors_for("tdx-eventlog")
POSITIVE = [v for v in VECTORS if not v.expected.get("negative")]
NEGATIVE = [v for v in VECTORS if v.expected.get("negative")]


def _log(v: Vector) -> bytes:
    return v.read("ccel" if "ccel" in v.files else "event_log_json")


def _collateral(v: Vector) -> list[bytes]:
    dcap = v.expected["dcap"][0]
    path = v.dir / dcap["collateral"] if "collateral" in dcap else vectors_dir() / dcap["collateral_ref"]
    return [v.read("pck_cert_chain"), path.read_bytes()]


def _type_key(name: str) -> str:
    return "DSTACK_RUNTIME_EVENT(0x08000001)" if name == "DSTACK_RUNTIME_EVENT" else name


def test_the_set_is_what_the_issue_describes():
    kinds = Counter(v.kind for v in VECTORS)
    assert kinds == {"tdx-quote+ccel": 3, "tdx-quote+dstack-eventlog": 2}
    assert len(NEGATIVE) == 2
    pads = {v.expected["trailing_padding"]["byte"] for v in VECTORS if "trailing_padding" in v.expected}
    assert pads == {"0xff", "0x00"}  # both paddings are exercised


@pytest.mark.parametrize("v", VECTORS, ids=[v.path for v in VECTORS])
def test_replay_gives_the_expected_registers(v: Vector):
    log = parse_event_log(_log(v))
    quote = parse_quote(v.read("quote"))
    rep = replay(log, quote.body.rtmr)  # type: ignore[union-attr]
    ex = v.expected
    assert list(rep.matches) == ex["rtmr_replay_matches"]
    assert [r.hex() for r in rep.replayed] == ex["rtmrs"]
    assert [q.hex() for q in rep.quote] == ex["quote_rtmrs"]
    assert len(log.events) == ex["n_events"]
    assert Counter(_type_key(e.type) for e in log.events) == Counter(ex["event_types"])
    if "mr_index_counts" in ex:  # CCEL: CC MR index = RTMR + 1
        counts = Counter(str(e.register + 1) for e in log.events if e.register is not None)
        assert counts == Counter(ex["mr_index_counts"])
    if "imr_counts" in ex:  # dstack JSON: zero-based
        assert Counter(str(e.register) for e in log.events if e.register is not None) == Counter(ex["imr_counts"])
    if "rtmr3_event_names" in ex:
        assert [e.name for e in log.events if e.register == 3] == ex["rtmr3_event_names"]


@pytest.mark.parametrize("v", POSITIVE, ids=[v.path for v in POSITIVE])
def test_verify_and_replay_as_of_the_vector_time(v: Vector):
    ve = verify("tdx-quote", v.read("quote"), collateral=_collateral(v), at=v.verify_time, event_log=_log(v))
    assert ve.tcb_status == v.expected["dcap"][0]["result"]["status"]
    c = ve.claims
    assert [c[f"rtmr{i}"] for i in range(4)] == v.expected["quote_rtmrs"]
    assert len(c["event_log"]) == sum(1 for _ in parse_event_log(_log(v)).events if _.register is not None)
    assert c["event_log_format"] == ("ccel" if "ccel" in v.files else "dstack-json")
    assert c["loaded_digests"] == []  # no ca-service loader ran in these TDs
    assert any(ch.name == "event_log.replay" and ch.passed for ch in ve.checks)
    descs = {e["description"] for e in c["event_log"]}
    assert "separator" in descs and "Exit Boot Services Invocation" in descs
    if "rtmr3_event_names" in v.expected:
        assert [r["name"] for r in c["runtime_events"]] == v.expected["rtmr3_event_names"]


def test_gce_descriptions_decode_the_boot_chain():
    v = next(x for x in POSITIVE if x.path.endswith("gce-cos113-ccel"))
    rep = replay(parse_event_log(_log(v)), [bytes.fromhex(h) for h in v.expected["quote_rtmrs"]])
    events = claims(rep)["event_log"]
    descs = [e["description"] for e in events]
    assert "variable SecureBoot (1 bytes)" in descs
    assert "EFI image EFI\\BOOT\\BOOTX64.EFI" in descs
    assert any(d.startswith("kernel_cmdline: /syslinux/vmlinuz.A") for d in descs)
    # EV_EFI_ACTION strings are what was hashed; a PE image's description is only what the log says
    by = {e["description"]: e for e in events}
    assert by["Exit Boot Services Invocation"]["digest_of_data"] is True
    assert by["EFI image EFI\\BOOT\\BOOTX64.EFI"]["digest_of_data"] is False


def test_negative_gce_pair_is_refused_after_the_quote_verifies():
    v = next(x for x in NEGATIVE if x.path.endswith("neg-gce-cos113-other-boot"))
    pos = next(x for x in POSITIVE if x.path.endswith("gce-cos113-ccel"))
    assert v.read("quote") == pos.read("quote")  # the same genuine quote, the log of another boot
    with pytest.raises(EventLogMismatch) as exc:
        verify("tdx-quote", v.read("quote"), collateral=_collateral(pos), at=v.verify_time, event_log=_log(v))
    assert exc.value.code == "evidence.event_log_mismatch" and exc.value.fields["field"] == "rtmr0"


@pytest.mark.parametrize("v", NEGATIVE, ids=[v.path for v in NEGATIVE])
def test_negative_pairs_yield_no_claims(v: Vector):
    rep = replay(parse_event_log(_log(v)), parse_quote(v.read("quote")).body.rtmr)  # type: ignore[union-attr]
    with pytest.raises(EventLogMismatch) as exc:
        claims(rep)
    first_bad = v.expected["rtmr_replay_matches"].index(False)
    assert exc.value.fields["field"] == f"rtmr{first_bad}"
