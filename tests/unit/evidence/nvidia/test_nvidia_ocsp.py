"""NVIDIA OCSP from responses kept as collateral (issue 11 section 2): good under a test root
injected as ``TrustRoots(nvidia_device=...)``; every way a response can be unusable gives
``revocation.nvidia_ocsp_<state>``; the real vectors' chains cannot be vouched for by anyone else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from tests.unit.evidence.nvidia.fakenvidia import AT, VECTOR, FakeNvidia, impostor
from tests.vectors.manifest import vectors_for

FAKE = FakeNvidia()
V2025 = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2025")


def run(responses: list[bytes], at=AT, **kw):
    return verify("nvidia-gpu", FAKE.report(), collateral=[FAKE.chain_pem(), *responses], at=at, roots=FAKE.roots, **kw)


def code(responses: list[bytes], **kw) -> str:
    try:
        run(responses, **kw)
    except EvidenceError as exc:
        return exc.code
    return "ok"


def ocsp_check(r):
    return next(c for c in r.checks if c.name == "nvidia.ocsp")


def test_good_responses_check_revocation():
    r = run(FAKE.all_good())
    assert ocsp_check(r).result == "pass"
    assert r.revocation == {"nvidia_ocsp": "good"} and r.claims["ocsp_checked"] is True
    assert [c["state"] for c in r.claims["ocsp"]["certificates"]] == ["good"] * 3
    # the certificate cannot outlive the OCSP answers it was judged by
    assert r.expires_at["nvidia.ocsp"] == AT + timedelta(days=6)
    assert {k for k in r.collateral_sha256 if k.startswith("ocsp")} == {"ocsp0", "ocsp1", "ocsp2"}


def test_delegated_responder_and_other_certid_hashes():
    assert ocsp_check(run([FAKE.ocsp(i, signer="delegate") for i in (1, 2, 3)])).result == "pass"
    assert ocsp_check(run(FAKE.all_good(certid_hash=hashes.SHA1()))).result == "pass"


def test_missing_is_skipped_not_passed():
    r = run([])
    assert ocsp_check(r).result == "skipped" and r.revocation == {"nvidia_ocsp": "missing"}
    assert r.unchecked_revocation == ("revocation.nvidia_ocsp_missing",)
    partial = run(FAKE.all_good()[:2])  # the GSP BROM certificate (next to the leaf) has no answer
    assert partial.revocation == {"nvidia_ocsp": "missing"}
    states = [(c["subject"].split("CN=")[1].split(",")[0], c["state"]) for c in partial.claims["ocsp"]["certificates"]]
    assert states == [("Test GH100 GSP BROM", "missing"), ("Test GH100 Provisioner ICA 1", "good"),
                      ("Test GH100 Identity", "good")]


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: FAKE.all_good(this_update=AT - timedelta(days=10), next_update=AT - timedelta(days=3)),
     "revocation.nvidia_ocsp_expired"),
    (lambda: FAKE.all_good(this_update=AT + timedelta(hours=1)), "revocation.nvidia_ocsp_expired"),
    (lambda: FAKE.all_good(next_update=None), "revocation.nvidia_ocsp_invalid"),
    (lambda: FAKE.all_good(status=ocsp.OCSPCertStatus.UNKNOWN), "revocation.nvidia_ocsp_invalid"),
    (lambda: [*FAKE.all_good()[:2], FAKE.ocsp(3, signer="stranger")], "revocation.nvidia_ocsp_bad_signature"),
    (lambda: FAKE.all_good(signer="sibling"), "revocation.nvidia_ocsp_bad_signature"),
    (lambda: FAKE.all_good(signer="delegate-no-eku"), "revocation.nvidia_ocsp_bad_signature"),
    (lambda: [ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
        Encoding.DER)], "revocation.nvidia_ocsp_invalid"),
    (lambda: [*FAKE.all_good(), b"\x30\x06\x0a\x01\x00\xa0\x01\xff"], "revocation.nvidia_ocsp_invalid"),
    (lambda: FAKE.all_good(status=ocsp.OCSPCertStatus.REVOKED), "evidence.certificate_revoked"),
], ids=["expired", "not-yet-valid", "no-next-update", "unknown", "stranger", "sibling-ca", "delegate-no-eku",
        "unsuccessful", "unparsable", "revoked"])
def test_unusable_responses_are_refused_with_the_item(build, expected):
    responses = build()
    assert code(responses) == expected
    if expected.startswith("revocation."):
        # a policy with revocation.allow_unchecked accepts it: skipped, the state kept for the EAR warning
        r = run(responses, allow_unchecked_revocation=True)
        assert ocsp_check(r).result == "skipped" and expected in ocsp_check(r).detail
        assert r.unchecked_revocation == (expected,)
    else:  # revoked is never accepted
        assert code(responses, allow_unchecked_revocation=True) == expected


def test_refusal_keeps_the_checks_made():
    with pytest.raises(EvidenceError) as err:
        run(FAKE.all_good(signer="stranger"))
    assert err.value.code == "revocation.nvidia_ocsp_bad_signature"
    assert err.value.fields["failed_checks"] == ["nvidia.ocsp"]
    assert err.value.partial.claims["ocsp"]["state"] == "bad_signature"


def _forged_for_real_chain(v) -> list[bytes]:
    """Good answers for every certificate of a real chain, signed by a key that is not NVIDIA's."""
    pems = x509.load_pem_x509_certificates(v.read("cert_chain"))  # leaf first
    out = []
    for cert, issuer in zip(pems[1:-1], pems[2:], strict=True):
        forged, key = impostor(issuer)
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=issuer, algorithm=hashes.SHA384(), cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=v.verify_time - timedelta(days=1), next_update=v.verify_time + timedelta(days=1),
            revocation_time=None, revocation_reason=None)
        b = b.responder_id(ocsp.OCSPResponderEncoding.NAME, forged).certificates([forged])
        out.append(b.sign(key, hashes.SHA384()).public_bytes(Encoding.DER))
    return out


@pytest.mark.parametrize("v", [VECTOR, V2025], ids=lambda v: v.id)
def test_real_vectors(v):
    """The real vectors keep their outcome (genuine, OCSP not given: skipped); answers for their
    chains that NVIDIA did not sign are refused, and other devices' answers are not theirs."""
    r = verify("nvidia-gpu", v.read("report"), collateral=[v.read("cert_chain")], at=v.verify_time)
    assert ocsp_check(r).result == "skipped" and r.revocation == {"nvidia_ocsp": "missing"}
    forged = _forged_for_real_chain(v)
    with pytest.raises(EvidenceError) as err:
        verify("nvidia-gpu", v.read("report"), collateral=[v.read("cert_chain"), *forged], at=v.verify_time)
    assert err.value.code == "revocation.nvidia_ocsp_bad_signature"
    other = verify("nvidia-gpu", v.read("report"), collateral=[v.read("cert_chain"), *FAKE.all_good()],
                   at=v.verify_time)
    assert other.revocation == {"nvidia_ocsp": "missing"}
