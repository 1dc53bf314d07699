"""Every SEV-SNP vector in ../shared/vectors, verified as of its verify_time."""

from __future__ import annotations

import json
import random
import re
import warnings
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.errors import AmdCrlExpired, AmdCrlMissing, CertificateExpired, DebugEnabled, EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.snp.certs import parse_vek
from ca_service.evidence.snp.chain import check_crls, clear_caches
from ca_service.evidence.snp.parse import SigningKey, parse_report
from ca_service.evidence.snp.verify import verify_genuine
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import Vector, vectors_for

SNP = vectors_for("snp")
IDS = [v.id for v in SNP]

# Vectors whose full verification at verify_time is a refusal, and why. Everything else they
# expect (chain, signature, product, TCB, chip id) is still checked through verify_genuine.
KNOWN_REFUSALS: dict[str, tuple[str, str]] = {
    "snp/milan-gosevguest-vcek": (
        "evidence.debug_enabled",
        "POLICY 0xB0000 sets DEBUG (bit 19): genuine, but below the vendor baseline",
    ),
    "snp/milan-dstack-vcek": (
        "revocation.amd_crl_expired",
        "the only Milan CRL at hand ends 2026-05-12, before this VCEK's notBefore (2026-06-17); "
        "manifest crl_overlaps_cert_validity is false",
    ),
    "snp/milan-aws-vlek": (
        "revocation.amd_crl_missing",
        "the vector has no VLEK CRL (ARK-Milan's /vlek/v1/Milan/crl): revocation cannot be established",
    ),
}


def collateral(v: Vector, *, crl: bool = True) -> list[bytes]:
    roles = ["vek", "cert_chain"] + (["crl"] if crl and "crl" in v.files else [])
    return [v.read(r) for r in roles]


def crl_usable(v: Vector) -> bool:
    return "crl" in v.files and v.expected.get("crl_overlaps_cert_validity", True)


def crl_state(v: Vector) -> str:
    """What the manifest says the vector's own CRL establishes at verify_time."""
    if "crl" not in v.files:
        return "missing"
    return "good" if crl_usable(v) else "expired"


def provenance_summary(v: Vector) -> dict[str, object]:
    text = (v.dir / "PROVENANCE.md").read_text()
    m = re.search(r"## Report summary\s+```json\n(.*?)\n```", text, re.S)
    assert m, "PROVENANCE.md has no report summary"
    return dict(json.loads(m.group(1)))


@pytest.mark.parametrize("v", SNP, ids=IDS)
def test_vector_expected_outcome(v: Vector) -> None:
    exp = v.expected
    result = verify_genuine(v.read("report"), load_collateral(collateral(v)), v.verify_time, DEFAULT_ROOTS)
    c = result.claims
    assert exp["signature_chain_valid"] and exp["report_signature_valid"]
    assert c["signing_key"] == exp["signing_key"].lower()
    assert c["product"] == exp["product"]
    assert {k: c["reported_tcb"][k] for k in exp["reported_tcb"]} == exp["reported_tcb"]
    assert exp["vek_tcb_matches_reported_tcb"]
    if "hwid_matches_chip_id" in exp:
        assert c["hwid_matches_chip_id"] is exp["hwid_matches_chip_id"]
    else:
        assert c["hwid_matches_chip_id"] is None  # VLEK: never matched on chip id
    state = crl_state(v)
    assert result.revocation == {"amd_crl": state}
    crl_check = next(ch for ch in result.checks if ch.name == "revocation.amd_crl")
    if state == "good":
        assert c["crl"]["checked"] and c["revoked"] is exp["revoked"] and crl_check.passed
    else:  # reported as what it is, never as passed: ca_service.evidence.verify refuses it
        assert not c["crl"]["checked"] and c["revoked"] is None
        assert crl_check.failed and crl_check.code == f"revocation.amd_crl_{state}"
    if "crl_window" in exp:
        lo, hi = exp["crl_window"]
        assert c["crl"]["this_update"].startswith(lo.rstrip("Z")) and c["crl"]["next_update"].startswith(
            hi.rstrip("Z")
        )
    assert all(ch.passed for ch in result.checks if ch.name not in ("snp.debug", "revocation.amd_crl"))
    assert result.tcb_status is None


@pytest.mark.parametrize("v", SNP, ids=IDS)
def test_vector_through_public_entry_point(v: Vector) -> None:
    """verify("snp-report", ...) with all the vector's collateral, as the CLI would pass it."""
    refusal = KNOWN_REFUSALS.get(v.id)
    if refusal is None:
        result = verify("snp-report", v.read("report"), collateral=collateral(v), at=v.verify_time)
        assert (
            result.kind == "snp-report" and result.report_data == parse_report(v.read("report")).report_data
        )
        json.dumps(result.to_json())
        return
    with pytest.raises(EvidenceError) as err:
        verify("snp-report", v.read("report"), collateral=collateral(v), at=v.verify_time)
    assert err.value.code == refusal[0], refusal[1]


def test_known_refusals_are_what_they_say() -> None:
    gosev = next(v for v in SNP if v.id == "snp/milan-gosevguest-vcek")
    assert parse_report(gosev.read("report")).policy.debug
    with pytest.raises(DebugEnabled):
        verify("snp-report", gosev.read("report"), collateral=collateral(gosev), at=gosev.verify_time)
    dstack = next(v for v in SNP if v.id == "snp/milan-dstack-vcek")
    # Without the stale CRL it is not accepted either: revocation is missing then, not "not checked, pass".
    with pytest.raises(AmdCrlMissing):
        verify("snp-report", dstack.read("report"), collateral=collateral(dstack, crl=False), at=dstack.verify_time)
    # The CRL itself is genuine: it verifies inside its own window.
    coll = load_collateral(collateral(dstack))
    from ca_service.evidence.snp.chain import build_chain

    chain = build_chain(
        next(c for c in coll.certificates if "VCEK" in c.subject.rfc4514_string()),
        coll.certificates,
        DEFAULT_ROOTS.amd,
    )
    inside = coll.crls[0].last_update_utc + timedelta(days=1)
    assert check_crls(chain, coll.crls, inside).checked
    # A policy grace that covers how long ago the CRL's nextUpdate was accepts it, with a warning.
    next_update = coll.crls[0].next_update_utc
    assert next_update is not None
    late = dstack.verify_time - next_update
    ok = verify("snp-report", dstack.read("report"), collateral=collateral(dstack), at=dstack.verify_time,
                revocation_grace=late)
    assert ok.warnings == ("revocation.amd_crl_expired",) and ok.revocation == {"amd_crl": "expired"}
    assert next(ch for ch in ok.checks if ch.name == "revocation.amd_crl").passed
    with pytest.raises(AmdCrlExpired):
        verify("snp-report", dstack.read("report"), collateral=collateral(dstack), at=dstack.verify_time,
               revocation_grace=late - timedelta(seconds=1))


@pytest.mark.parametrize("v", SNP, ids=IDS)
def test_report_fields_match_provenance(v: Vector) -> None:
    """An independent reading of every field (the vectors' PROVENANCE.md summaries)."""
    s = provenance_summary(v)
    r = parse_report(v.read("report"))
    assert r.version == s["version"] and r.guest_svn == s["guest_svn"] and r.policy.raw == s["policy"]
    assert r.vmpl == s["vmpl"] and r.signature_algo == s["signature_algo"]
    assert r.platform_info.raw == s["platform_info"]
    assert isinstance(r.signing_key, SigningKey) and r.signing_key.name == s["signing_key"]
    assert (r.reported_tcb_raw, r.current_tcb_raw) == (s["reported_tcb"], s["current_tcb"])
    assert (r.committed_tcb_raw, r.launch_tcb_raw) == (s["committed_tcb"], s["launch_tcb"])
    assert r.current_version == (s["current_major"], s["current_minor"], s["current_build"])
    if s["cpuid_fam_id"] is None:
        assert r.cpuid is None and r.version == 2
    else:
        assert r.cpuid is not None
        assert (r.cpuid.family, r.cpuid.model, r.cpuid.stepping) == (
            s["cpuid_fam_id"],
            s["cpuid_mod_id"],
            s["cpuid_step"],
        )
    assert r.chip_id.hex() == s["chip_id"] and r.measurement.hex() == s["measurement"]
    assert r.report_data.hex() == s["report_data"]


@pytest.mark.parametrize("v", SNP, ids=IDS)
def test_collateral_order_does_not_matter(v: Vector) -> None:
    items = collateral(v, crl=crl_usable(v))
    # Split PEM chains and add the vendors' bundles: the verifier must pick by content.
    pems = x509.load_pem_x509_certificates(v.read("cert_chain"))
    extra = [p.public_bytes(Encoding.DER) for p in pems]
    for bundle in v.dir.glob("*ask_ark*.pem"):
        extra.append(bundle.read_bytes())
    rng = random.Random(v.id)
    for _ in range(3):
        shuffled = items + extra
        rng.shuffle(shuffled)
        clear_caches()
        r = verify_genuine(v.read("report"), load_collateral(shuffled), v.verify_time, DEFAULT_ROOTS)
        assert r.claims["product"] == v.expected["product"]


def test_every_vcek_and_vlek_in_the_vectors_loads() -> None:
    """Real AMD VCEK/VLEK certificates have serial 0: cryptography 48 loads them, with a warning."""
    root = SNP[0].dir.parent
    paths = sorted(
        p
        for p in root.glob("*/*")
        if p.suffix in (".der", ".pem", ".testcer")
        and ("vcek" in p.name or "vlek" in p.name)
        and "ask" not in p.name
    )
    assert len(paths) >= 15
    for p in paths:
        data = p.read_bytes()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            cert = (
                x509.load_pem_x509_certificate(data)
                if data.startswith(b"-----")
                else x509.load_der_x509_certificate(data)
            )
        assert cert.serial_number <= 0, p  # the known quirk: if AMD fixes it, this test says so
        info = parse_vek(cert)
        assert info.product_line_name in ("Milan", "Genoa"), p
        assert (info.hwid is None) == (info.key_type is SigningKey.VLEK), p


def test_expired_vlek_is_refused() -> None:
    v = next(v for v in SNP if v.expected.get("signing_key") == "VLEK")
    with pytest.raises(CertificateExpired):
        verify(
            "snp-report", v.read("report"), collateral=collateral(v), at=v.verify_time + timedelta(days=400)
        )


def test_expired_crl_is_refused() -> None:
    v = next(v for v in SNP if v.id == "snp/milan-virtee-vcek")
    after = x509.load_der_x509_crl(v.read("crl")).next_update_utc
    assert after is not None
    with pytest.raises(AmdCrlExpired) as err:
        verify("snp-report", v.read("report"), collateral=collateral(v), at=after + timedelta(seconds=1))
    assert err.value.fields["item"] == "amd_crl" and err.value.fields["state"] == "expired"
