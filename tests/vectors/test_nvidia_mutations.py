"""Every byte of a real H100 attestation report flipped, and a sample of RIM bytes: refused, each
with the code of the check that sees it first."""

from __future__ import annotations

import random

from ca_service.errors import EvidenceError
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.nvidia.verify import verify_nvidia
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

V = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
REPORT = V.read("report")
SIG, MAL, UNS = "evidence.signature_invalid", "evidence.malformed", "evidence.unsupported"


def layout(data: bytes) -> dict[int, set[str]]:
    """An independent reading of DSP0274 1.1 Tables 43/45/46 and the opaque TLVs: offset -> codes
    a 0x01 flip there may give."""
    m: dict[int, set[str]] = {0: {UNS}, 1: {UNS}, 2: {UNS}}  # version, code, Param1 bit 0 (signature)
    m.update({o: {SIG} for o in range(3, 37)})  # Param2, nonce, slot
    r = 37
    m.update({r: {MAL}, r + 1: {UNS}, r + 2: {SIG}, r + 3: {SIG}, r + 4: {MAL}, r + 5: {MAL}, r + 6: {MAL}, r + 7: {MAL}})
    rec_len = int.from_bytes(data[r + 5 : r + 8], "little")
    off, end = r + 8, r + 8 + rec_len
    while off < end:
        size = int.from_bytes(data[off + 2 : off + 4], "little")
        m[off] = {MAL, SIG}  # index: 0, repeated, or a new unique one
        m[off + 1] = {UNS}
        m[off + 2] = m[off + 3] = {MAL}
        m[off + 4] = {SIG}  # DMTF value type
        m[off + 5] = m[off + 6] = {MAL}
        m.update({o: {SIG} for o in range(off + 7, off + 4 + size)})
        off += 4 + size
    m.update({o: {SIG} for o in range(off, off + 32)})  # responder nonce
    off += 32
    opaque_len = int.from_bytes(data[off : off + 2], "little")
    m[off] = m[off + 1] = {MAL}
    off += 2
    end = off + opaque_len
    while off < end:
        size = int.from_bytes(data[off + 2 : off + 4], "little")
        m[off] = m[off + 1] = {MAL, SIG}  # field type: repeated or another one
        m[off + 2] = m[off + 3] = {MAL, SIG}  # size: the TLV stream may re-align by chance
        m.update({o: {SIG} for o in range(off + 4, off + 4 + size)})
        off += 4 + size
    m.update({o: {SIG} for o in range(off, len(data))})  # signature
    assert len(m) == len(data)
    return m


def test_every_flipped_byte_is_refused() -> None:
    coll = load_collateral([V.read("cert_chain")])
    verify_nvidia(REPORT, coll, V.verify_time, DEFAULT_ROOTS)  # warm the chain cache
    expected = layout(REPORT)
    exact = sum(1 for codes in expected.values() if len(codes) == 1 and SIG in codes)
    assert exact > 0.85 * len(REPORT)  # the exact code for every value byte (89%)
    wrong = []
    for off in range(len(REPORT)):
        mutated = bytearray(REPORT)
        mutated[off] ^= 0x01
        try:
            verify_nvidia(bytes(mutated), coll, V.verify_time, DEFAULT_ROOTS)
            got = "ok"
        except EvidenceError as exc:
            got = exc.code
        # a length made shorter leaves bytes after the signature that are not zero padding
        if got == "evidence.nvidia.trailing_data" and MAL in expected[off]:
            continue
        if got not in expected[off]:
            wrong.append((off, got, expected[off]))
    assert not wrong, wrong[:10]


def test_sampled_rim_flips_are_refused() -> None:
    """A seeded sample of bytes of the VBIOS RIM: every flip refused as collateral (the signed
    SoftwareIdentity) or as its signer chain (the embedded certificates)."""
    driver, vbios = ((V.dir / n).read_bytes() for n in V.files["rims_test_no_gpu"])
    payload = range(vbios.index(b"<ns0:Payload"), vbios.index(b"</ns0:Payload>"))
    rng = random.Random(20240601)
    offsets = sorted(rng.sample(range(len(vbios)), 300)) + rng.sample(payload, 100)
    wrong = []
    for off in offsets:
        mutated = bytearray(vbios)
        mutated[off] ^= 0x01
        coll = load_collateral([V.read("cert_chain"), driver, bytes(mutated)])
        try:
            verify_nvidia(REPORT, coll, V.verify_time, DEFAULT_ROOTS)
            got = "ok"
        except EvidenceError as exc:
            got = exc.code
        allowed = {"evidence.collateral_invalid"} if off in payload else {
            "evidence.collateral_invalid", "evidence.chain_invalid", "evidence.root_untrusted",
            "evidence.collateral_mismatch"}
        if got not in allowed:
            wrong.append((off, got))
    assert not wrong, wrong[:10]
