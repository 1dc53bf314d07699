"""Every AWS Nitro vector in ../shared/vectors, verified as of its verify_time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import cbor2
import pytest
from cryptography import x509

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nitro.chain import clear_caches
from ca_service.evidence.nitro.parse import parse_evidence
from ca_service.evidence.nitro.verify import verify_genuine
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots, is_pinned
from tests.vectors.manifest import Vector, vectors_for

NITRO = vectors_for("nitro")
IDS = [v.id for v in NITRO]

# What the full verification (vendor baseline included) gives at verify_time, when not a pass.
KNOWN_REFUSALS: dict[str, tuple[str, str]] = {
    "nitro/dstack-nsm-debug-enclave": (
        "evidence.debug_enabled",
        "PCR0..2 all zero: an enclave started in debug mode (manifest pcr0_2_all_zero_debug)",
    ),
}


def code_of(evidence: bytes, at: datetime, **kw: object) -> str:
    try:
        verify("nitro", evidence, at=at, **kw)  # type: ignore[arg-type]
    except EvidenceError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("v", NITRO, ids=IDS)
def test_vector_expected_outcome(v: Vector) -> None:
    exp = v.expected
    r = verify_genuine(v.read("cose_sign1"), Collateral(), v.verify_time, DEFAULT_ROOTS)
    c = r.claims
    assert exp["signature_chain_valid"] and exp["cose_signature_valid"]
    assert c["module_id"] == exp["module_id"]
    assert c["digest"] == exp["digest"]
    assert c["timestamp"].startswith(exp["timestamp"].rstrip("Z"))
    assert sorted(int(i) for i, h in c["pcrs"].items() if any(h != "0" for h in h)) == exp["nonzero_pcrs"]
    assert c["debug"] is exp["pcr0_2_all_zero_debug"]
    leaf = x509.load_der_x509_certificate(parse_evidence(v.read("cose_sign1")).document.certificate)
    assert [leaf.not_valid_before_utc.isoformat(), leaf.not_valid_after_utc.isoformat()] == exp["leaf_valid"]
    assert all(ch.passed for ch in r.checks if ch.name not in ("nitro.debug", "nitro.revocation"))
    # AWS publishes no offline revocation source: shown as skipped, never as passed
    assert next(ch for ch in r.checks if ch.name == "nitro.revocation").result == "skipped"
    assert r.report_data == bytes(64) and c["nonce"] is None and c["public_key"] is None
    json.dumps(r.to_json())


@pytest.mark.parametrize("v", NITRO, ids=IDS)
def test_vector_through_public_entry_point(v: Vector) -> None:
    refusal = KNOWN_REFUSALS.get(v.id)
    got = code_of(v.read("cose_sign1"), v.verify_time)
    assert got == (refusal[0] if refusal else "ok")


@pytest.mark.parametrize("v", NITRO, ids=IDS)
def test_tagged_form_is_accepted(v: Vector) -> None:
    tagged = b"\xd2" + v.read("cose_sign1")  # CBOR tag 18 + the same array
    r = verify_genuine(tagged, Collateral(), v.verify_time, DEFAULT_ROOTS)
    assert r.claims["cose_tagged"] is True and r.claims["module_id"] == v.expected["module_id"]


@pytest.mark.parametrize("v", NITRO, ids=IDS)
def test_dstack_framed_file_is_refused_but_holds_the_document(v: Vector) -> None:
    """``nitro_attestation*.bin`` is dstack's SCALE framing around the COSE_Sign1 (4-byte prefix,
    151 unsigned trailing bytes): not what a client sends, refused as malformed."""
    raw, cose = v.read("raw"), v.read("cose_sign1")
    assert raw[4 : 4 + len(cose)] == cose and len(raw) - len(cose) - 4 == 151
    assert code_of(raw, v.verify_time) == "evidence.malformed"


def test_root_pin_matches_the_vector_root() -> None:
    for v in NITRO:
        root = x509.load_pem_x509_certificate(v.read("root"))
        assert is_pinned(root, DEFAULT_ROOTS.nitro)
        bundle_root = parse_evidence(v.read("cose_sign1")).document.cabundle[0]
        assert bundle_root == root.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                           fromlist=["Encoding"]).Encoding.DER)


def test_unpinned_root_is_refused() -> None:
    v = NITRO[0]
    clear_caches()
    assert code_of(v.read("cose_sign1"), v.verify_time, roots=TrustRoots(nitro=frozenset())) == (
        "evidence.root_untrusted"
    )
    assert code_of(v.read("cose_sign1"), v.verify_time) == "ok"
    # Warm cache: the pin is still checked.
    assert code_of(v.read("cose_sign1"), v.verify_time, roots=TrustRoots(nitro=frozenset({"00" * 32}))) == (
        "evidence.root_untrusted"
    )


def test_expired_certificates_are_refused() -> None:
    v = NITRO[0]
    lo, hi = (datetime.fromisoformat(t) for t in v.expected["leaf_valid"])
    ev = v.read("cose_sign1")
    assert code_of(ev, hi + timedelta(seconds=1)) == "evidence.certificate_expired"
    assert code_of(ev, lo - timedelta(seconds=1)) == "evidence.certificate_expired"
    assert code_of(ev, lo) == "ok" and code_of(ev, hi) == "ok"


def test_nonce_checks_user_data() -> None:
    v = NITRO[0]
    ev = v.read("cose_sign1")
    assert code_of(ev, v.verify_time, nonce=bytes(32)) == "ok"  # user_data is 64 zero bytes
    assert code_of(ev, v.verify_time, nonce=b"\x01" + bytes(31)) == "evidence.report_data_mismatch"


def test_unprotected_header_is_not_signed_but_harmless() -> None:
    """RFC 9052: the unprotected map is outside the signature; nothing is read from it."""
    v = NITRO[0]
    arr = cbor2.loads(v.read("cose_sign1"))
    arr[1] = {4: b"kid"}
    assert code_of(cbor2.dumps(arr), v.verify_time) == "ok"


@pytest.mark.parametrize("vector", NITRO, ids=IDS)
def test_expiries_are_the_chains_and_nothing_is_fetched(vector: Vector):
    """issue 14: what a certificate issued on Nitro evidence never outlives: the attestation certificate's
    notAfter and the cabundle's earliest; the family needs no fetched collateral (the root is pinned)."""
    from ca_service.evidence.needs import needs_for

    doc = vector.read("cose_sign1")
    result = verify_genuine(doc, Collateral(), vector.verify_time, DEFAULT_ROOTS)
    parsed = parse_evidence(doc).document
    leaf = x509.load_der_x509_certificate(parsed.certificate)
    bundle = [x509.load_der_x509_certificate(c) for c in parsed.cabundle]
    assert dict(result.expires_at) == {"nitro.certificate": leaf.not_valid_after_utc,
                                       "nitro.cabundle": min(c.not_valid_after_utc for c in bundle)}
    assert result.earliest_expiry == ("nitro.certificate", leaf.not_valid_after_utc)  # the NSM's hours-long one
    assert needs_for("nitro", doc) == ((),)
