"""Every byte of a real Nitro attestation document flipped: refused, with the code of the check
that sees it first (ES384 over the whole payload comes before the chain)."""

from __future__ import annotations

import cbor2
from cryptography import x509

from ca_service.errors import EvidenceError
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nitro.verify import verify_nitro
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

V = next(v for v in vectors_for("nitro") if v.id == "nitro/dstack-nsm-2025-12-25")
COSE = V.read("cose_sign1")


def _content_regions() -> list[tuple[int, int, str]]:
    """(start, end, what) of the byte/text string contents an independent reading finds."""
    arr = cbor2.loads(COSE)
    doc = cbor2.loads(arr[2])
    out: list[tuple[int, int, str]] = []

    def add(value: bytes, what: str, after: bytes = b"") -> None:
        start = COSE.find(value, COSE.find(after) if after else 0)
        assert start > 0, what
        out.append((start, start + len(value), what))

    add(arr[3], "signature")
    add(doc["certificate"], "leaf")
    for i, c in enumerate(doc["cabundle"]):
        add(c, f"cabundle{i}")
    add(doc["module_id"].encode(), "module_id", b"imodule_id")
    add(doc["user_data"], "user_data", b"iuser_data")
    pcrs_at = COSE.find(b"dpcrs")
    for index, value in doc["pcrs"].items():  # <index> 0x58 0x30 <48 bytes>, index < 24
        start = COSE.find(bytes([index]) + b"\x58\x30" + value, pcrs_at) + 3
        out.append((start, start + len(value), f"pcr{index}"))
    return out


def expected_code(mutated: bytes, off: int, regions: list[tuple[int, int, str]]) -> set[str]:
    for start, end, what in regions:
        if start <= off < end:
            if what == "leaf":  # a leaf that no longer parses (or whose key does not) is malformed
                der = mutated[start:end]
                try:
                    x509.load_der_x509_certificate(der).public_key()
                except Exception:
                    return {"evidence.malformed"}
            return {"evidence.signature_invalid"}
    # CBOR headers, map keys, digest, timestamp, zero PCRs: structure or content, never a pass.
    return {"evidence.malformed", "evidence.unsupported", "evidence.signature_invalid"}


def test_every_flipped_byte_is_refused() -> None:
    regions = _content_regions()
    covered = sum(e - s for s, e, _ in regions)
    assert covered > 0.9 * len(COSE)  # the exact code is asserted for >90% of the bytes
    verify_nitro(COSE, Collateral(), V.verify_time, DEFAULT_ROOTS)
    wrong = []
    for off in range(len(COSE)):
        mutated = bytearray(COSE)
        mutated[off] ^= 0x01
        try:
            verify_nitro(bytes(mutated), Collateral(), V.verify_time, DEFAULT_ROOTS)
            got = "ok"
        except EvidenceError as exc:
            got = exc.code
        want = expected_code(bytes(mutated), off, regions)
        if got not in want:
            wrong.append((off, got, want))
    assert not wrong, wrong[:10]


def test_flipping_structure_bytes_with_ff() -> None:
    """0xFF flips of every byte outside the big contents (headers, keys, digest, timestamp)."""
    regions = _content_regions()
    inside = {o for s, e, _ in regions for o in range(s, e)}
    for off in range(len(COSE)):
        if off in inside:
            continue
        mutated = bytearray(COSE)
        mutated[off] ^= 0xFF
        try:
            verify_nitro(bytes(mutated), Collateral(), V.verify_time, DEFAULT_ROOTS)
        except EvidenceError:
            continue
        raise AssertionError(f"flip at {off} passed")
