"""Sim report layout (docs/adr/0002-sim-tee.md). TDX-shaped: the body is a TD report 1.0 body.

    offset  size  field
    0       8     magic b"CASIMTD1"
    8       2     version (LE, = 1)
    10      2     reserved (0)
    12      584   TD report body (Intel TDX DCAP quote body v4 layout: TEE_TCB_SVN .. REPORTDATA)
    596     64    ECDSA P-256 signature r||s over bytes [0, 596) by the attestation key
    660     2     number of certificates n (LE, 1..4), then n x (u16 LE length, DER certificate)
                  leaf (attestation key) first, the sim root last
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported

MAGIC = b"CASIMTD1"
HEADER_LEN = 12
BODY_LEN = 584
SIGNED_LEN = HEADER_LEN + BODY_LEN
SIG_LEN = 64
MAX_CERTS = 4

# TD report body fields, in order (Intel TDX DCAP Quoting Library API, Table "TD Quote Body").
BODY_FIELDS: tuple[tuple[str, int], ...] = (
    ("tee_tcb_svn", 16),
    ("mrseam", 48),
    ("mrsignerseam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mrtd", 48),
    ("mrconfigid", 48),
    ("mrowner", 48),
    ("mrownerconfig", 48),
    ("rtmr0", 48),
    ("rtmr1", 48),
    ("rtmr2", 48),
    ("rtmr3", 48),
    ("report_data", 64),
)
assert sum(n for _, n in BODY_FIELDS) == BODY_LEN  # noqa: S101 - layout invariant, not a security check

TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28


@dataclass(frozen=True)
class SimReport:
    raw: bytes
    version: int
    fields: dict[str, bytes]
    signature: bytes
    certificates_der: tuple[bytes, ...]

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_LEN]

    @property
    def td_attributes(self) -> int:
        return int.from_bytes(self.fields["td_attributes"], "little")


def parse_sim_report(data: bytes) -> SimReport:
    """Parse a sim report.

    Raises:
        EvidenceMalformed (``evidence.malformed``), EvidenceUnsupported (``evidence.unsupported``).
    """
    if len(data) < SIGNED_LEN + SIG_LEN + 2:
        raise EvidenceMalformed("sim report is truncated")
    if data[:8] != MAGIC:
        raise EvidenceMalformed("not a sim report (bad magic)")
    version, reserved = struct.unpack_from("<HH", data, 8)
    if version != 1 or reserved != 0:
        raise EvidenceUnsupported(f"sim report version {version} is not supported")
    fields: dict[str, bytes] = {}
    off = HEADER_LEN
    for name, size in BODY_FIELDS:
        fields[name] = data[off : off + size]
        off += size
    signature = data[SIGNED_LEN : SIGNED_LEN + SIG_LEN]
    off = SIGNED_LEN + SIG_LEN
    (count,) = struct.unpack_from("<H", data, off)
    off += 2
    if not 1 <= count <= MAX_CERTS:
        raise EvidenceMalformed("sim report carries no or too many certificates")
    certs: list[bytes] = []
    for _ in range(count):
        if off + 2 > len(data):
            raise EvidenceMalformed("sim report certificate list is truncated")
        (n,) = struct.unpack_from("<H", data, off)
        off += 2
        if n == 0 or off + n > len(data):
            raise EvidenceMalformed("sim report certificate is truncated")
        certs.append(data[off : off + n])
        off += n
    if off != len(data):
        raise EvidenceMalformed("trailing bytes after the sim report")
    return SimReport(raw=data, version=version, fields=fields, signature=signature, certificates_der=tuple(certs))


def serialize_body(fields: dict[str, bytes]) -> bytes:
    out = bytearray()
    for name, size in BODY_FIELDS:
        value = fields.get(name, b"\x00" * size)
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes")
        out += value
    return bytes(out)
