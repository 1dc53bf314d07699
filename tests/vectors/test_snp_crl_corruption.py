"""The real ARK-Milan CRL, corrupted every way we can think of, through ``ca_service.evidence.verify``:
each corruption is refused with a code that names the revocation source, none is "not checked, pass"
(the review of issue 11 found 545 corrupted SNP CRLs silently ignored), and none crashes.

The report and chain are genuine (snp/milan-virtee-vcek at its verify_time), so the CRL is the only
thing that differs from an accepted verification.
"""

from __future__ import annotations

import base64
import collections
import warnings
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.errors import CAServiceError
from ca_service.evidence import verify
from tests.vectors.manifest import vectors_for

SNP = {v.id: v for v in vectors_for("snp")}
V = SNP["snp/milan-virtee-vcek"]
GENOA = SNP["snp/genoa-azure-vcek"]
REPORT = V.read("report")
CRL = V.read("crl")
BASE = [V.read("vek"), V.read("cert_chain")]
# what a corrupted CRL may be refused with: the AMD CRL named, or (only when the bytes no longer have a
# CRL's outer DER shape, so nothing says it was meant as one) the collateral item refused as unknown
NAMED = {"revocation.amd_crl_invalid", "revocation.amd_crl_bad_signature", "revocation.amd_crl_expired",
         "revocation.amd_crl_missing"}
UNRECOGNISABLE = "evidence.collateral_invalid"


def outcome(crl_items: list[bytes], **kw: object) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AMD's serial-0 VCEKs
            r = verify("snp-report", REPORT, collateral=[*BASE, *crl_items], at=V.verify_time, **kw)  # type: ignore[arg-type]
    except CAServiceError as exc:
        return exc.code
    return "ok:" + ",".join(f"{k}={s}" for k, s in sorted(r.revocation.items()))


def test_the_genuine_crl_is_good() -> None:
    assert outcome([CRL]) == "ok:amd_crl=good"


def test_every_byte_flipped_three_ways_is_refused_with_a_code() -> None:
    """866 bytes x 3 masks = 2598 corrupted CRLs; each refused, none accepted, none crashed."""
    seen: collections.Counter[str] = collections.Counter()
    for off in range(len(CRL)):
        for mask in (0x01, 0x80, 0xFF):
            m = bytearray(CRL)
            m[off] ^= mask
            seen[outcome([bytes(m)])] += 1
    assert sum(seen.values()) == 3 * len(CRL)
    assert set(seen) <= NAMED | {UNRECOGNISABLE}, seen
    # nearly all name the AMD CRL; the rest broke the DER framing (outer, TBS, issuer and thisUpdate headers)
    assert seen[UNRECOGNISABLE] < 0.03 * sum(seen.values()), seen
    assert seen["revocation.amd_crl_bad_signature"] > 1000 and seen["revocation.amd_crl_invalid"] > 300, seen


@pytest.mark.parametrize("cut", [1, 2, 16, 100, 400, 800, 865])
def test_truncated(cut: int) -> None:
    assert outcome([CRL[:cut]]) in NAMED | {UNRECOGNISABLE}
    assert outcome([CRL[: len(CRL) - cut]]) in NAMED | {UNRECOGNISABLE}


@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 64, b"garbage", CRL])
def test_trailing_bytes(tail: bytes) -> None:
    assert outcome([CRL + tail]) in NAMED


def test_pem_wrapping_with_a_corrupted_body() -> None:
    body = base64.encodebytes(CRL[:200] + bytes([CRL[200] ^ 0x10]) + CRL[201:]).decode()
    pem = f"-----BEGIN X509 CRL-----\n{body}-----END X509 CRL-----\n".encode()
    assert outcome([pem]) in NAMED
    broken = b"-----BEGIN X509 CRL-----\nAAAA!!!!\n-----END X509 CRL-----\n"
    assert outcome([broken]) == "revocation.amd_crl_invalid"
    good = x509.load_der_x509_crl(CRL).public_bytes(Encoding.PEM)
    assert outcome([good]) == "ok:amd_crl=good"


def _ark_named(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, issuer: x509.Name | None = None,
               pss: bool = True) -> bytes:
    real = x509.load_der_x509_crl(CRL)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer or real.issuer)
         .last_update(real.last_update_utc).next_update(real.next_update_utc))  # type: ignore[arg-type]
    if isinstance(key, rsa.RSAPrivateKey) and pss:
        crl = b.sign(key, hashes.SHA384(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA384()), 48))
    else:
        crl = b.sign(key, hashes.SHA384())
    return crl.public_bytes(Encoding.DER)


def test_forged_crls_naming_the_ark() -> None:
    """An empty CRL an attacker signs with their own key under ARK-Milan's name: wrongly signed."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    assert outcome([_ark_named(rsa_key)]) == "revocation.amd_crl_bad_signature"
    assert outcome([_ark_named(rsa_key, pss=False)]) == "revocation.amd_crl_bad_signature"  # PKCS#1 v1.5
    assert outcome([_ark_named(ec.generate_private_key(ec.SECP384R1()))]) == "revocation.amd_crl_bad_signature"
    # beside the genuine CRL a forged one is still refused: a bad CRL is never outvoted
    assert outcome([CRL, _ark_named(rsa_key)]) == "revocation.amd_crl_bad_signature"


def test_a_crl_of_someone_else_is_not_ignored() -> None:
    key = rsa.generate_private_key(65537, 2048)
    other = x509.Name.from_rfc4514_string("CN=ARK-Milam,O=Advanced Micro Devices")
    assert outcome([_ark_named(key, issuer=other)]) == "revocation.amd_crl_bad_signature"
    intel = x509.Name.from_rfc4514_string("CN=Intel SGX Root CA,O=Intel Corporation")
    assert outcome([_ark_named(key, issuer=intel)]) == "revocation.amd_crl_bad_signature"
    # another product line's genuine CRL is no CRL for this chain: missing (and beside ours, left aside)
    assert outcome([GENOA.read("crl")]) == "revocation.amd_crl_missing"
    assert outcome([CRL, GENOA.read("crl")]) == "ok:amd_crl=good"


def test_no_crl_and_an_expired_one() -> None:
    assert outcome([]) == "revocation.amd_crl_missing"
    real = x509.load_der_x509_crl(CRL)
    assert real.next_update_utc is not None
    late = real.next_update_utc + timedelta(hours=1)
    with pytest.raises(CAServiceError) as ei:
        verify("snp-report", REPORT, collateral=[*BASE, CRL], at=late)
    assert ei.value.code == "revocation.amd_crl_expired"
    assert ei.value.fields == {"item": "amd_crl", "state": "expired", "evidence_type": "snp-report"}


def test_every_corruption_is_accepted_only_by_the_explicit_rule_and_then_warned() -> None:
    """allow_unchecked accepts an unusable CRL, never silently: skipped check, state and warning."""
    forged = _ark_named(rsa.generate_private_key(65537, 2048))
    flipped = bytearray(CRL)
    flipped[-5] ^= 0x01  # inside the signature
    for items, state in (([], "missing"), ([forged], "bad_signature"), ([bytes(flipped)], "bad_signature"),
                         ([CRL[:-1] + b"\x00\x00"], "invalid")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = verify("snp-report", REPORT, collateral=[*BASE, *items], at=V.verify_time,
                       allow_unchecked_revocation=True)
        assert r.revocation == {"amd_crl": state}
        assert r.warnings == (f"revocation.amd_crl_{state}",)
        check = next(c for c in r.checks if c.name == "revocation.amd_crl")
        assert check.skipped and not check.passed and check.result == "skipped"
        assert r.claims["revoked"] is None  # not established, never "not revoked"
        assert "amd.crl" not in r.expires_at  # nothing was judged by it
        # a grace does not accept what is not an expired CRL
        with pytest.raises(CAServiceError) as ei:
            verify("snp-report", REPORT, collateral=[*BASE, *items], at=V.verify_time,
                   revocation_grace=timedelta(days=3650))
        assert ei.value.code == f"revocation.amd_crl_{state}"


def test_a_revoked_ask_is_refused_even_by_a_stale_crl_and_even_with_allow_unchecked() -> None:
    """Signed by the real ARK we cannot; the fake hierarchy covers the revoked ASK (test_fake_chain).
    Here: the listing in a verified CRL outranks the rule, checked with a CRL past nextUpdate."""
    from tests.unit.evidence.snp.fakeamd import AT, FakeAmd, make_report

    amd = FakeAmd("Milan")
    key, vcek = amd.vek(chip_id=bytes(range(64)), tcb={"bl": 3, "tee": 0, "snp": 8, "ucode": 115})
    stale = amd.crl(this_update=AT - timedelta(days=40), next_update=AT - timedelta(days=10),
                    revoked=(amd.ask.serial_number,))
    for kw in ({}, {"allow_unchecked_revocation": True}, {"revocation_grace": timedelta(days=30)}):
        with pytest.raises(CAServiceError) as ei:
            verify("snp-report", make_report(key), collateral=[vcek, amd.chain_pem(), stale], at=AT,
                   roots=amd.roots, **kw)  # type: ignore[arg-type]
        assert ei.value.code == "evidence.certificate_revoked"
