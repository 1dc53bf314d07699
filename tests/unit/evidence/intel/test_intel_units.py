"""Unit checks: the collateral cache, revocation, TCB level selection and status merging."""

from __future__ import annotations

import pytest

from ca_service.errors import CertificateRevoked
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.intel import collateral as coll_mod
from ca_service.evidence.intel import pck as pck_mod
from ca_service.evidence.intel.parse import parse_quote
from ca_service.evidence.intel.tcb import Status, TcbLevel, match_platform_level
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

V4 = next(v for v in vectors_for("tdx") if v.path == "tdx/dcapqvl-v4-uptodate")


def test_warm_quote_does_not_reverify_collateral(monkeypatch: pytest.MonkeyPatch) -> None:
    coll_mod.clear_caches()
    pck_mod.clear_cache()
    calls = {"doc": 0, "pck": 0}
    real_doc, real_pck = coll_mod._verify_document, pck_mod._verify_pck

    def count_doc(*a):  # type: ignore[no-untyped-def]
        calls["doc"] += 1
        return real_doc(*a)

    def count_pck(*a):  # type: ignore[no-untyped-def]
        calls["pck"] += 1
        return real_pck(*a)

    monkeypatch.setattr(coll_mod, "_verify_document", count_doc)
    monkeypatch.setattr(pck_mod, "_verify_pck", count_pck)
    c = load_collateral([V4.read("collateral")])
    for _ in range(5):
        verify("tdx-quote", V4.read("quote"), collateral=c, at=V4.verify_time)
    assert calls == {"doc": 1, "pck": 1}
    # Other bytes are another key: a cached success never covers different collateral.
    other = V4.read("collateral").replace(b'"tcb_info":', b'"tcb_info" :', 1)
    verify("tdx-quote", V4.read("quote"), collateral=[other], at=V4.verify_time)
    assert calls["doc"] == 2


def test_revoked_pck_is_refused() -> None:
    q = parse_quote(V4.read("quote"))
    p = pck_mod.verified_pck(q.cert_data, DEFAULT_ROOTS.intel)
    leaf, ca = p.chain.windows[0], p.chain.windows[1]
    with pytest.raises(CertificateRevoked):
        p.chain.check_revocation({leaf.issuer: frozenset({leaf.serial}), ca.issuer: frozenset()})
    # no CRL from the PCK CA: its status is unknown, and said so (the verifier refuses it as missing)
    assert p.chain.check_revocation({ca.issuer: frozenset()}) == (leaf,)
    assert p.chain.check_revocation({leaf.issuer: frozenset({1, 2}), ca.issuer: frozenset()}) == ()


def _lvl(sgx0: int, pce: int, tdx: tuple[int, ...], status: str) -> TcbLevel:
    return TcbLevel((sgx0,) + (0,) * 15, pce, tdx + (0,) * (16 - len(tdx)), Status(status, ()))


def test_tcb_level_selection() -> None:
    levels = [_lvl(7, 11, (5, 0, 7), "UpToDate"), _lvl(6, 11, (3, 0, 6), "OutOfDate")]
    cpu = (6,) + (0,) * 15
    tee = bytes([2, 1, 6]) + bytes(13)
    assert match_platform_level(levels, cpu, 11, tee) is None  # module SVN 2 < 3
    hit = match_platform_level(levels, cpu, 11, tee, module_checked=True)  # module left to its identity
    assert hit is not None and hit.status.status == "OutOfDate"
    assert match_platform_level(levels, cpu, 10, tee, module_checked=True) is None  # PCE SVN too low
    assert match_platform_level(levels, (7,) + (0,) * 15, 11, None) is levels[0]


def test_status_merge_keeps_the_worse_and_unions_advisories() -> None:
    a = Status("SWHardeningNeeded", ("INTEL-SA-1",), "2024-01-01")
    b = Status("OutOfDate", ("INTEL-SA-2", "INTEL-SA-1"))
    m = a.merge(b)
    assert m.status == "OutOfDate" and m.advisory_ids == ("INTEL-SA-1", "INTEL-SA-2")
    assert m.tcb_date == "2024-01-01"


def test_cold_quote_parses_its_collateral_document_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The items' parse is the verifier's too: the same bytes are not read again (issue 15)."""
    from ca_service import boundedjson

    coll_mod.clear_caches()
    pck_mod.clear_cache()
    doc = V4.read("collateral")
    seen: list[bytes] = []
    real = boundedjson.loads

    def counting(text, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(bytes(text) if isinstance(text, bytes) else text.encode())
        return real(text, *a, **k)

    monkeypatch.setattr(boundedjson, "loads", counting)
    verify("tdx-quote", V4.read("quote"), collateral=[doc], at=V4.verify_time)
    assert seen.count(doc) == 1
    assert len(seen) == 3  # the document, and the signed TCB Info and QE Identity inside it


def test_collateral_json_is_parsed_once_per_exact_bytes() -> None:
    """The same document again is kept without a parse; a bad one is refused every time."""
    from ca_service.errors import CollateralInvalid
    from ca_service.evidence import collateral_items

    collateral_items.clear_cache()
    doc = V4.read("collateral")
    first = load_collateral([doc])
    assert isinstance(first.json_values[0], dict) and first.json_documents == (doc,)
    again = load_collateral([doc])
    assert again.json_values == (None,) and again.json_documents == (doc,)
    # The verifier parses what the items did not: the quote still verifies, cold.
    coll_mod.clear_caches()
    pck_mod.clear_cache()
    assert verify("tdx-quote", V4.read("quote"), collateral=again, at=V4.verify_time).tcb_status
    bad = doc.replace(b",", b" ", 1)  # still shaped like JSON, no longer JSON
    for _ in range(2):
        with pytest.raises(CollateralInvalid):
            load_collateral([bad])
    deep = b"[" * 100 + b"]" * 100
    for _ in range(2):
        with pytest.raises(CollateralInvalid):
            load_collateral([deep])
