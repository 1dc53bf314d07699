"""Mutations of real SEV-SNP vectors: each attack refused with its own code."""

from __future__ import annotations

import struct

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.snp import chain as chain_mod
from ca_service.evidence.snp.certs import PRODUCT_LINES
from ca_service.evidence.snp.verify import verify_snp
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots
from tests.vectors.manifest import Vector, vectors_for

SNP = {v.id: v for v in vectors_for("snp")}
VIRTEE = SNP["snp/milan-virtee-vcek"]  # report v2, Milan, VCEK, CRL
AZURE = SNP["snp/milan-azure-vtpm"]  # report v3, Milan, VCEK, CRL
GENOA = SNP["snp/genoa-azure-vcek"]
TRUSTEE = SNP["snp/milan-trustee-vcek"]
VLEK = SNP["snp/milan-aws-vlek"]


def coll(v: Vector, roles: tuple[str, ...] = ("vek", "cert_chain", "crl")) -> list[bytes]:
    return [v.read(r) for r in roles if r in v.files]


def code_of(
    report: bytes, v: Vector, collateral: list[bytes] | None = None, roots: TrustRoots = DEFAULT_ROOTS
) -> str:
    try:
        verify(
            "snp-report",
            report,
            collateral=coll(v) if collateral is None else collateral,
            at=v.verify_time,
            roots=roots,
        )
    except EvidenceError as exc:
        return exc.code
    return "ok"


def expected_code(original: bytes, off: int, mask: int) -> str:
    """What flipping ``mask`` at ``off`` must give: signature_invalid, unless the field is read
    before the signature is checked (then that check's own code)."""
    version = struct.unpack_from("<I", original, 0)[0]
    if off < 0x004:  # VERSION: 3 ^ 1 is 2, still a version we read
        mutated = bytearray(original[:4])
        mutated[off] ^= mask
        if struct.unpack("<I", mutated)[0] not in (2, 3, 5):
            return "evidence.unsupported"
    if 0x034 <= off < 0x038:  # SIGNATURE_ALGO
        return "evidence.unsupported"
    if off == 0x048:  # SIGNING_KEY bits 4:2
        sel = ((original[off] ^ mask) >> 2) & 7
        return {0: "evidence.signature_invalid", 1: "evidence.collateral_missing"}.get(
            sel, "evidence.unsupported"
        )
    if 0x180 <= off < 0x188 and (off - 0x180) in (0, 1, 6, 7):  # REPORTED_TCB bl, tee, snp, ucode
        return "evidence.snp.tcb_mismatch"
    if version >= 3 and off in (0x188, 0x189):  # CPUID family/model
        fam, model = original[0x188], original[0x189]
        fam, model = (fam ^ mask, model) if off == 0x188 else (fam, model ^ mask)
        if not PRODUCT_LINES["Milan"].matches_cpuid(fam, model):
            return "evidence.snp.product_mismatch"
    if 0x1A0 <= off < 0x1E0:  # CHIP_ID vs the VCEK's hwID
        return "evidence.snp.chip_id_mismatch"
    if 0x2A0 <= off < 0x4A0:
        rel = (off - 0x2A0) % 0x200
        if rel >= 144 or rel % 72 >= 48:  # reserved signature bytes, high bytes of R/S
            return "evidence.malformed"
    return "evidence.signature_invalid"


@pytest.mark.parametrize(
    ("v", "mask", "end"), [(VIRTEE, 0xFF, 0x4A0), (AZURE, 0x01, 0x2A0), (AZURE, 0x80, 0x2A0)]
)
def test_every_flipped_byte_is_refused(v: Vector, mask: int, end: int) -> None:
    """Exhaustive: every byte of the signed region (and, for one vector, of the whole report)."""
    original = v.read("report")
    collateral = load_collateral(coll(v))
    assert verify_snp(original, collateral, v.verify_time, DEFAULT_ROOTS)  # warm the chain cache
    wrong = []
    for off in range(end):
        mutated = bytearray(original)
        mutated[off] ^= mask
        try:
            verify_snp(bytes(mutated), collateral, v.verify_time, DEFAULT_ROOTS)
            got = "ok"
        except EvidenceError as exc:
            got = exc.code
        if got != expected_code(original, off, mask):
            wrong.append((hex(off), got, expected_code(original, off, mask)))
    assert not wrong


def test_vcek_from_another_machine() -> None:
    # Same product line, same TCB (3/0/8/115), another chip.
    other = [TRUSTEE.read("vek"), VIRTEE.read("cert_chain"), VIRTEE.read("crl")]
    assert code_of(VIRTEE.read("report"), VIRTEE, other) == "evidence.snp.chip_id_mismatch"


def test_vcek_for_another_tcb_on_trustee_invalid_certs() -> None:
    # trustee's deliberately broken VCEKs: their hwID is 00..3f (both encodings).
    for name in ("test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"):
        bad = [(TRUSTEE.dir / name).read_bytes(), TRUSTEE.read("cert_chain")]
        assert code_of(TRUSTEE.read("report"), TRUSTEE, bad) == "evidence.snp.chip_id_mismatch"


def test_ask_from_another_product_line() -> None:
    assert code_of(VIRTEE.read("report"), VIRTEE, [VIRTEE.read("vek"), GENOA.read("cert_chain")]) == (
        "evidence.snp.product_mismatch"
    )
    assert code_of(GENOA.read("report"), GENOA, [GENOA.read("vek"), VIRTEE.read("cert_chain")]) == (
        "evidence.snp.product_mismatch"
    )
    # Milan ASK under the Genoa ARK.
    milan_ask = VIRTEE.read("ask")
    genoa_ark = GENOA.read("ark")
    assert code_of(VIRTEE.read("report"), VIRTEE, [VIRTEE.read("vek"), milan_ask, genoa_ark]) == (
        "evidence.snp.product_mismatch"
    )


def test_unpinned_ark() -> None:
    assert (
        code_of(VIRTEE.read("report"), VIRTEE, roots=TrustRoots(amd=frozenset())) == "evidence.root_untrusted"
    )
    genoa_only = TrustRoots(
        amd=frozenset({"4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"})
    )
    assert code_of(VIRTEE.read("report"), VIRTEE, roots=genoa_only) == "evidence.root_untrusted"


def test_expired_and_not_yet_valid_crl() -> None:
    from datetime import timedelta

    from cryptography import x509

    crl = x509.load_der_x509_crl(VIRTEE.read("crl"))
    for at in (crl.last_update_utc - timedelta(seconds=1), crl.next_update_utc + timedelta(seconds=1)):  # type: ignore[operator]
        with pytest.raises(EvidenceError) as err:
            verify("snp-report", VIRTEE.read("report"), collateral=coll(VIRTEE), at=at)
        assert err.value.code == "revocation.amd_crl_expired"


def test_crl_of_another_product_line_is_no_crl_for_this_chain() -> None:
    """The Genoa ARK's CRL beside a Milan chain says nothing about it: revocation is missing."""
    assert code_of(VIRTEE.read("report"), VIRTEE, [*coll(VIRTEE, ("vek", "cert_chain")), GENOA.read("crl")]) == (
        "revocation.amd_crl_missing"
    )
    # Beside Milan's own CRL it is left aside, and Milan's decides.
    r = verify("snp-report", VIRTEE.read("report"), collateral=[*coll(VIRTEE), GENOA.read("crl")],
               at=VIRTEE.verify_time)
    assert r.revocation == {"amd_crl": "good"} and r.warnings == ()


def test_tampered_crl_is_refused() -> None:
    crl = bytearray(VIRTEE.read("crl"))
    crl[-5] ^= 0x01  # inside the signature
    assert code_of(
        VIRTEE.read("report"), VIRTEE, [VIRTEE.read("vek"), VIRTEE.read("cert_chain"), bytes(crl)]
    ) == ("revocation.amd_crl_bad_signature")


def test_missing_collateral() -> None:
    report = VIRTEE.read("report")
    assert code_of(report, VIRTEE, [VIRTEE.read("cert_chain")]) == "evidence.collateral_missing"
    assert code_of(report, VIRTEE, [VIRTEE.read("vek"), VIRTEE.read("ask")]) == "evidence.collateral_missing"
    assert code_of(report, VIRTEE, [VIRTEE.read("vek"), VIRTEE.read("ark")]) == "evidence.collateral_missing"
    # A VLEK-signed report with only VCEK collateral, and the other way round.
    assert code_of(VLEK.read("report"), VLEK, coll(VIRTEE)) == "evidence.collateral_missing"
    assert code_of(report, VIRTEE, coll(VLEK)) == "evidence.collateral_missing"


def test_garbage_certificates() -> None:
    report = VIRTEE.read("report")
    assert code_of(report, VIRTEE, [b"\x30\x82\x01\x00" + b"\x00" * 256]) == "evidence.collateral_invalid"
    assert code_of(report, VIRTEE, [b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]) == (
        "evidence.collateral_invalid"
    )
    # A VCEK whose signature by the ASK is broken (one bit in its signature).
    vcek = bytearray(VIRTEE.read("vek"))
    vcek[-10] ^= 0x01
    assert code_of(report, VIRTEE, [bytes(vcek), VIRTEE.read("cert_chain")]) == "evidence.chain_invalid"


def test_bad_report_sizes_and_versions() -> None:
    report = VIRTEE.read("report")
    assert code_of(report[:-1], VIRTEE) == "evidence.malformed"
    assert code_of(report[:0x2A0], VIRTEE) == "evidence.malformed"
    assert code_of(report + b"\x00", VIRTEE) == "evidence.malformed"
    for version in (0, 1, 4, 6, 0xFFFFFFFF):
        assert code_of(struct.pack("<I", version) + report[4:], VIRTEE) == "evidence.unsupported"


def test_nonce_binding() -> None:
    report = VIRTEE.read("report")
    nonce = report[0x50:0x70]
    verify("snp-report", report, collateral=coll(VIRTEE), at=VIRTEE.verify_time, nonce=nonce)
    with pytest.raises(EvidenceError) as err:
        verify("snp-report", report, collateral=coll(VIRTEE), at=VIRTEE.verify_time, nonce=b"\x00" * 32)
    assert err.value.code == "evidence.report_data_mismatch"


def test_warm_report_costs_no_chain_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    collateral = load_collateral(coll(AZURE))
    chain_mod.clear_caches()
    calls: list[str] = []
    real = chain_mod.verify_pss

    def counting(issuer: object, cert: object, what: str) -> None:
        calls.append(what)
        real(issuer, cert, what)  # type: ignore[arg-type]

    monkeypatch.setattr(chain_mod, "verify_pss", counting)
    verify_snp(AZURE.read("report"), collateral, AZURE.verify_time, DEFAULT_ROOTS)
    assert len(calls) == 3  # cold: ARK self-signature, ASK, VCEK
    verify_snp(AZURE.read("report"), collateral, AZURE.verify_time, DEFAULT_ROOTS)
    assert len(calls) == 3  # warm: only the report's P-384 signature
    # The cache never outlives the pins, the time or the CRL window.
    with pytest.raises(EvidenceError) as err:
        verify_snp(AZURE.read("report"), collateral, AZURE.verify_time, TrustRoots(amd=frozenset()))
    assert err.value.code == "evidence.root_untrusted"
