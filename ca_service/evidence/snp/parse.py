"""Parse an AMD SEV-SNP ATTESTATION_REPORT into an immutable typed object.

References (AMD publication 56860, "SEV Secure Nested Paging Firmware ABI Specification",
rev. 1.55 onwards; table numbers as in that revision):

- Table 23 "ATTESTATION_REPORT Structure": the 0x4A0-byte report, every field little-endian.
  VERSION 2 (rev. 1.52), 3 (rev. 1.55: adds CPUID_FAM_ID/CPUID_MOD_ID/CPUID_STEP at 0x188),
  5 (rev. 1.58: adds LAUNCH_MIT_VECTOR/CURRENT_MIT_VECTOR at 0x1F8/0x200).
- Table 3 / section 2.2 "TCB_VERSION": the 64-bit TCB layout. Families 19h (Milan, Genoa) use
  BOOT_LOADER[7:0] TEE[15:8] SNP[55:48] MICROCODE[63:56]; family 1Ah (Turin) uses
  FMC[7:0] BOOT_LOADER[15:8] TEE[23:16] SNP[31:24] MICROCODE[63:56].
- Section 4.3 "Guest Policy": the POLICY bit field.
- PLATFORM_INFO (Table 23, offset 0x40): platform-wide configuration bits.
- Chapter 10 "Digital Signatures": ECDSA P-384 with SHA-384; R and S are 72-byte little-endian
  fields at the start of the 0x200-byte SIGNATURE field (0x2A0); the rest of it is reserved.

Parsing only checks structure. Nothing here is trusted until ``verify.py`` has checked the
signature over :attr:`AttestationReport.signed_bytes`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers bytes 0x000..0x29F (Table 23)
SUPPORTED_VERSIONS = frozenset({2, 3, 5})

# Table 23 offsets.
_OFF_CHIP_ID = 0x1A0
_OFF_SIGNATURE = 0x2A0
_SIG_COMPONENT = 72  # R and S fields are 72 bytes each, little-endian (Chapter 10)
_P384_BYTES = 48

SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1  # Chapter 10, "Signature Algorithm Encodings"


class SigningKey(Enum):
    """Table 23 offset 0x48 bits 4:2, SIGNING_KEY."""

    VCEK = 0
    VLEK = 1
    NONE = 7


class TcbLayout(Enum):
    """Which TCB_VERSION layout (Table 3) applies: chosen by CPU family, never by the report."""

    FAMILY_19H = "19h"  # Milan, Genoa
    FAMILY_1AH = "1Ah"  # Turin: adds FMC


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION value (Table 3), decoded under a given layout."""

    raw: int
    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: int, layout: TcbLayout) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if layout is TcbLayout.FAMILY_1AH:
            return cls(raw=raw, fmc=b[0], bl=b[1], tee=b[2], snp=b[3], ucode=b[7])
        return cls(raw=raw, bl=b[0], tee=b[1], snp=b[6], ucode=b[7])

    def to_json(self) -> dict[str, int]:
        out = {"raw": self.raw, "bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


@dataclass(frozen=True)
class GuestPolicy:
    """Section 4.3 Guest Policy (POLICY, Table 23 offset 0x08)."""

    raw: int

    def bit(self, n: int) -> bool:
        return bool((self.raw >> n) & 1)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def debug(self) -> bool:
        return self.bit(19)

    def to_json(self) -> dict[str, int | bool]:
        return {
            "raw": self.raw,
            "abi_minor": self.abi_minor,
            "abi_major": self.abi_major,
            "smt": self.bit(16),
            "reserved_must_be_one": self.bit(17),
            "migrate_ma": self.bit(18),
            "debug": self.debug,
            "single_socket": self.bit(20),
            "cxl_allow": self.bit(21),
            "mem_aes_256_xts": self.bit(22),
            "rapl_dis": self.bit(23),
            "ciphertext_hiding_dram": self.bit(24),
            "page_swap_disable": self.bit(25),
        }


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO (Table 23 offset 0x40)."""

    raw: int

    def to_json(self) -> dict[str, int | bool]:
        def bit(n: int) -> bool:
            return bool((self.raw >> n) & 1)

        return {
            "raw": self.raw,
            "smt_en": bit(0),
            "tsme_en": bit(1),
            "ecc_en": bit(2),
            "rapl_dis": bit(3),
            "ciphertext_hiding_dram_en": bit(4),
            "alias_check_complete": bit(5),
            "tio_en": bit(7),
        }


@dataclass(frozen=True)
class Cpuid:
    """CPUID_FAM_ID / CPUID_MOD_ID / CPUID_STEP (Table 23 offset 0x188, report version >= 3)."""

    family: int
    model: int
    stepping: int


@dataclass(frozen=True)
class AttestationReport:
    """An ATTESTATION_REPORT (Table 23). TCB fields stay raw: their layout depends on the product,
    which the verifier establishes from the certificates and CPUID (see :meth:`tcb`)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: PlatformInfo
    author_key_en: bool
    mask_chip_key: bool
    signing_key: SigningKey | int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid: Cpuid | None
    chip_id: bytes
    committed_tcb_raw: int
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb_raw: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def chip_id_masked(self) -> bool:
        return self.mask_chip_key and not any(self.chip_id)

    def tcb(self, layout: TcbLayout) -> dict[str, TcbVersion]:
        return {
            "current": TcbVersion.decode(self.current_tcb_raw, layout),
            "reported": TcbVersion.decode(self.reported_tcb_raw, layout),
            "committed": TcbVersion.decode(self.committed_tcb_raw, layout),
            "launch": TcbVersion.decode(self.launch_tcb_raw, layout),
        }


def _u32(data: bytes, off: int) -> int:
    v: int = struct.unpack_from("<I", data, off)[0]
    return v


def _u64(data: bytes, off: int) -> int:
    v: int = struct.unpack_from("<Q", data, off)[0]
    return v


def parse_report(data: bytes) -> AttestationReport:
    """Parse one raw ATTESTATION_REPORT (exactly 0x4A0 bytes).

    Raises:
        EvidenceMalformed (``evidence.malformed``): wrong length, non-zero reserved signature bytes,
            signature components wider than P-384.
        EvidenceUnsupported (``evidence.unsupported``): a VERSION other than 2, 3 or 5, or a
            SIGNATURE_ALGO other than ECDSA P-384 with SHA-384.
    """
    if not isinstance(data, bytes | bytearray):
        raise EvidenceMalformed("SNP report must be bytes")
    data = bytes(data)
    if len(data) < REPORT_SIZE:
        raise EvidenceMalformed(f"SNP report truncated: {len(data)} bytes, expected {REPORT_SIZE}")
    if len(data) > REPORT_SIZE:
        raise EvidenceMalformed(f"SNP report oversized: {len(data)} bytes, expected {REPORT_SIZE}")

    version = _u32(data, 0x000)
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceUnsupported(f"SNP report version {version} is not supported (2, 3, 5)")
    signature_algo = _u32(data, 0x034)
    if signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise EvidenceUnsupported(f"SNP signature algorithm {signature_algo} is not ECDSA P-384/SHA-384")

    # Chapter 10: R and S are little-endian 72-byte fields; a P-384 scalar fits in 48 bytes, and the
    # reserved rest of the 0x200-byte field is zero. Refusing anything else keeps the evidence bytes
    # canonical (the same signature cannot travel in several encodings, under several digests).
    sig = data[_OFF_SIGNATURE:]
    r_field, s_field = sig[:_SIG_COMPONENT], sig[_SIG_COMPONENT : 2 * _SIG_COMPONENT]
    if any(r_field[_P384_BYTES:]) or any(s_field[_P384_BYTES:]) or any(sig[2 * _SIG_COMPONENT :]):
        raise EvidenceMalformed("SNP signature field has non-zero bytes outside R and S")

    flags = _u32(data, 0x048)
    key_sel = (flags >> 2) & 0b111
    signing_key: SigningKey | int
    try:
        signing_key = SigningKey(key_sel)
    except ValueError:
        signing_key = key_sel  # reserved encoding: kept, refused by the verifier

    cpuid = None
    if version >= 3:
        cpuid = Cpuid(family=data[0x188], model=data[0x189], stepping=data[0x18A])
    launch_mit = current_mit = None
    if version >= 5:
        launch_mit, current_mit = _u64(data, 0x1F8), _u64(data, 0x200)

    return AttestationReport(
        raw=data,
        version=version,
        guest_svn=_u32(data, 0x004),
        policy=GuestPolicy(_u64(data, 0x008)),
        family_id=data[0x010:0x020],
        image_id=data[0x020:0x030],
        vmpl=_u32(data, 0x030),
        signature_algo=signature_algo,
        current_tcb_raw=_u64(data, 0x038),
        platform_info=PlatformInfo(_u64(data, 0x040)),
        author_key_en=bool(flags & 1),
        mask_chip_key=bool(flags & 2),
        signing_key=signing_key,
        report_data=data[0x050:0x090],
        measurement=data[0x090:0x0C0],
        host_data=data[0x0C0:0x0E0],
        id_key_digest=data[0x0E0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb_raw=_u64(data, 0x180),
        cpuid=cpuid,
        chip_id=data[_OFF_CHIP_ID : _OFF_CHIP_ID + 64],
        committed_tcb_raw=_u64(data, 0x1E0),
        current_version=(data[0x1EA], data[0x1E9], data[0x1E8]),  # major, minor, build
        committed_version=(data[0x1EE], data[0x1ED], data[0x1EC]),
        launch_tcb_raw=_u64(data, 0x1F0),
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature_r=int.from_bytes(r_field, "little"),
        signature_s=int.from_bytes(s_field, "little"),
    )
