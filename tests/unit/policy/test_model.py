"""Policy documents fail closed; digests are content addresses."""

from __future__ import annotations

import json

import pytest

from ca_service.errors import PolicyError
from ca_service.policy.model import load_policy, parse_duration

MRTD = "84c7147e2fed6ef5d1e551583e58d4e0a32bac930402f1030e4b095387b5c8eb33f25789478a4007a2a09da4cf767237"
BASE = f"""
name: t
evidence:
  required: [sim]
  sim: {{mrtd: ["{MRTD}"], debug: false}}
certificate: {{max_lifetime: 1h}}
"""


def test_valid_minimal():
    p = load_policy(BASE)
    assert p.required == ("sim",) and p.max_lifetime.total_seconds() == 3600


def test_formatting_does_not_change_the_digest():
    a = load_policy(BASE)
    as_json = json.dumps({"certificate": {"max_lifetime": "1h"}, "name": "t",
                          "evidence": {"sim": {"debug": False, "mrtd": [MRTD.upper()]}, "required": ["sim"]}})
    b = load_policy(as_json)
    assert a.digest == b.digest and a.canonical == b.canonical


@pytest.mark.parametrize("doc, why", [
    (BASE + "extra: 1\n", "unknown top-level key"),
    (BASE.replace("debug: false", "debug: false, frobnicate: 1"), "unknown rule"),
    (BASE.replace("sim: {", "sim: {}\n  x: {"), "empty section"),
    (BASE.replace("required: [sim]", "required: [sim, tpm]"), "unknown evidence type"),
    (BASE.replace("required: [sim]", "required: []"), "nothing required"),
    (BASE.replace("required: [sim]", "required: [sim, tdx-quote]"), "required type without a section"),
    (BASE + "  tdx-quote: {debug: false}\n".replace("  tdx", "tdx") , "top-level garbage"),
    (BASE.replace("debug: false", "debug: true"), "debug: true is never a reference value"),
    (BASE.replace("1h", "1.5h"), "bad duration"),
    (BASE.replace("1h", "1y"), "bad duration unit"),
    (BASE.replace(MRTD, MRTD[:-2]), "short measurement"),
    ("- a\n- b\n", "not a mapping"),
    ("name: [", "not YAML"),
    (BASE.replace("debug: false", "debug: false, min_tcb_evaluation_data_number: 1.5"), "float"),
    (BASE.replace("name: t", "name: T_T"), "bad name"),
    (BASE + "collateral: {}\n", "empty collateral section"),
])
def test_refused(doc: str, why: str):
    with pytest.raises(PolicyError) as ei:
        load_policy(doc)
    assert ei.value.code == "policy.invalid", why


def test_section_without_requirement_is_refused():
    doc = BASE.replace("certificate:", "  tdx-quote: {debug: false}\ncertificate:")
    with pytest.raises(PolicyError, match="not listed"):
        load_policy(doc)


def test_oversized_document_refused():
    with pytest.raises(PolicyError, match="64 KiB"):
        load_policy(BASE + "#" * 70_000)


def test_snp_rules_validate():
    doc = """
name: s
evidence:
  required: [snp-report]
  snp-report:
    min_tcb: {bl: 3, tee: 0, snp: 8, ucode: 115, fmc: 1}
    min_launch_tcb: {snp: 8}
    min_guest_svn: 2
    guest_policy: {debug: false, smt: true, migrate_ma: false}
    platform_info: {tsme_en: true}
    family_id: ["00000000000000000000000000000000"]
    vmpl: [0]
certificate: {max_lifetime: 1h}
"""
    assert load_policy(doc).rules("snp-report")["guest_policy"]["smt"] is True
    with pytest.raises(PolicyError):
        load_policy(doc.replace("smt: true", "smt: 1"))
    with pytest.raises(PolicyError):
        load_policy(doc.replace("tsme_en", "bogus_en"))
    with pytest.raises(PolicyError):
        load_policy(doc.replace("ucode: 115", "ucode: 300"))


def test_tdx_rules_validate():
    doc = """
name: x
evidence:
  required: [tdx-quote]
  tdx-quote:
    min_tcb_date: "2024-03-13"
    min_tee_tcb_svn: "06010300000000000000000000000000"
certificate: {max_lifetime: 1h}
"""
    load_policy(doc)
    load_policy(doc.replace('"2024-03-13"', '"2024-03-13T00:00:00Z"'))
    for bad in ('"13/03/2024"', '"2024-3-13"'):
        with pytest.raises(PolicyError):
            load_policy(doc.replace('"2024-03-13"', bad))
    with pytest.raises(PolicyError):
        load_policy(doc.replace("06010300000000000000000000000000", "0601"))


def test_duration():
    assert parse_duration("24h").total_seconds() == 86400
    with pytest.raises(PolicyError):
        parse_duration("-1h")
