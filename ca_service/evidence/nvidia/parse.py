"""Parse an NVIDIA Hopper attestation report: SPDM 1.1 GET_MEASUREMENTS request || MEASUREMENTS response.

This is the byte string the NVIDIA driver returns for ``nvmlDeviceGetConfComputeGpuAttestationReport``
and nvtrust's local verifier reads (``attestationReport.txt`` as hex; ``attestation_report.bin``
in ../shared/vectors is the same bytes). Layouts, DMTF DSP0274 (SPDM) 1.1:

GET_MEASUREMENTS request (section 10.11.1, Table 43), 37 bytes when a signature is requested:
  0 SPDMVersion (0x11) | 1 RequestResponseCode 0xE0 | 2 Param1 (bit 0: signature requested)
  3 Param2 (0xFF: all measurements) | 4 Nonce (32) | 36 SlotIDParam

MEASUREMENTS response (section 10.11.2, Table 45):
  0 SPDMVersion | 1 0x60 | 2 Param1 | 3 Param2 (slot id) | 4 NumberOfBlocks
  5 MeasurementRecordLength (3, LE) | 8 MeasurementRecord (L1) | 8+L1 Nonce (32)
  40+L1 OpaqueLength (2, LE) | 42+L1 OpaqueData (L2) | 42+L1+L2 Signature (96: P-384 r || s)

Measurement block (Table 46): Index (1) | MeasurementSpecification (1, bit 0 = DMTF) |
MeasurementSize (2, LE) | DMTF measurement: ValueType (1) | ValueSize (2, LE) | Value.

Opaque data is NVIDIA's: a list of (type u16 LE, size u16 LE, value) fields; types as nvtrust's
``OpaqueData.OPAQUE_DATA_TYPES`` (3 driver version, 6 VBIOS version, 12 measurement counts...).

Padding: NVML returns the report in a fixed buffer of ``NVML_CC_GPU_ATTESTATION_REPORT_SIZE``
(0x2000) bytes, and other attestation stacks forward the whole buffer, so real reports carry zeros
after the signature (NVIDIA's and Trustee's verifiers read the lengths and ignore them). Those bytes
are not signed: they are accepted only when every one is zero and the whole report stays within the
NVML buffer, and their count is a claim (``trailing_zero_padding``). Anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported, NvidiaTrailingData

SPDM_VERSIONS = frozenset({0x11})  # Hopper speaks SPDM 1.1
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_LEN = 37
NONCE_LEN = 32
SIGNATURE_LEN = 96  # ECDSA P-384, r || s big-endian (DSP0274 section 14, TPM_ALG_ECDSA_ECC_NIST_P384)
NVML_REPORT_BUFFER = 0x2000  # NVML_CC_GPU_ATTESTATION_REPORT_SIZE: the most a padded report can be
DMTF_SPEC = 0x01

OPAQUE_FIELDS: dict[int, str] = {
    1: "cert_issuer_name", 2: "cert_authority_key_identifier", 3: "driver_version", 4: "gpu_info",
    5: "sku", 6: "vbios_version", 7: "manufacturer_id", 8: "tamper_detection", 9: "smc", 10: "vpr",
    11: "nvdec0_status", 12: "msrscnt", 13: "cprinfo", 14: "board_id", 15: "chip_sku", 16: "chip_sku_mod",
    17: "project", 18: "project_sku", 19: "project_sku_mod", 20: "fwid", 21: "protected_pcie_status",
    22: "switch_pdi", 23: "floorswept_ports", 24: "position_id", 25: "lock_switch_status",
    32: "gpu_link_conn", 33: "sys_enable_status", 34: "opaque_data_version", 35: "chip_info",
    36: "feature_flag",
}
_TEXT_FIELDS = frozenset({"driver_version", "chip_sku", "chip_sku_mod", "project", "project_sku",
                          "project_sku_mod"})


@dataclass(frozen=True)
class MeasurementBlock:
    index: int  # SPDM index, 1-based; RIMs number the same block index - 1
    value_type: int
    value: bytes


@dataclass(frozen=True)
class OpaqueField:
    type: int
    value: bytes

    @property
    def name(self) -> str:
        return OPAQUE_FIELDS.get(self.type, f"type_{self.type}")


@dataclass(frozen=True)
class AttestationReport:
    raw: bytes
    spdm_version: int
    request_param1: int
    request_param2: int
    requester_nonce: bytes
    slot_id: int
    number_of_blocks: int
    blocks: tuple[MeasurementBlock, ...]  # in report order
    responder_nonce: bytes
    opaque: tuple[OpaqueField, ...]
    signature: bytes
    padding: int = 0  # zero bytes after the signature (unsigned; see the module docstring)

    @property
    def signed_bytes(self) -> bytes:
        """What the device signs: the request and the response up to the signature (SPDM 1.1
        section 10.11.2: L1/L2 = GET_MEASUREMENTS request || MEASUREMENTS response without signature)."""
        return self.raw[: len(self.raw) - self.padding - SIGNATURE_LEN]

    def opaque_value(self, name: str) -> bytes | None:
        for f in self.opaque:
            if f.name == name:
                return f.value
        return None

    @property
    def driver_version(self) -> str:
        raw = self.opaque_value("driver_version") or b""
        return raw.rstrip(b"\x00").decode("ascii", "replace")

    @property
    def vbios_version(self) -> str:
        """nvtrust's rendering: bytes 3,2,1,0 and 4 of the field, upper-case hex, dot-separated
        (``005e009601000000`` -> ``96.00.5E.00.01``)."""
        raw = self.opaque_value("vbios_version") or b""
        if len(raw) < 5:
            return ""
        return ".".join(f"{b:02X}" for b in (raw[3], raw[2], raw[1], raw[0], raw[4]))

    def measurement_list(self) -> list[str | None]:
        """Values as hex, position i = SPDM block i + 1 (the RIM index); None for a missing block."""
        top = max((b.index for b in self.blocks), default=0)
        out: list[str | None] = [None] * top
        for b in self.blocks:
            out[b.index - 1] = b.value.hex()
        return out

    def opaque_claims(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in self.opaque:
            if f.name == "msrscnt":
                out[f.name] = [int.from_bytes(f.value[i : i + 4], "little") for i in range(0, len(f.value), 4)]
            elif f.name in _TEXT_FIELDS:
                out[f.name] = f.value.rstrip(b"\x00").decode("ascii", "replace")
            else:
                out[f.name] = f.value.hex()
        return out


def _u(data: bytes, off: int, n: int) -> int:
    return int.from_bytes(data[off : off + n], "little")


def _parse_blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    off = 0
    for _ in range(count):
        if off + 4 > len(record):
            raise EvidenceMalformed("measurement record ends inside a block header")
        index, spec, size = record[off], record[off + 1], _u(record, off + 2, 2)
        body = record[off + 4 : off + 4 + size]
        if len(body) != size:
            raise EvidenceMalformed(f"measurement block {index} is truncated")
        if spec != DMTF_SPEC:
            raise EvidenceUnsupported(f"measurement block {index}: specification {spec:#x} is not DMTF")
        if index in seen or not 1 <= index <= 0xEF:
            raise EvidenceMalformed(f"measurement block index {index} is repeated or out of range")
        if size < 3 or _u(body, 1, 2) != size - 3:
            raise EvidenceMalformed(f"measurement block {index}: DMTF value size disagrees with the block size")
        seen.add(index)
        blocks.append(MeasurementBlock(index, body[0], bytes(body[3:])))
        off += 4 + size
    if off != len(record):
        raise EvidenceMalformed("measurement record length disagrees with its blocks")
    return tuple(blocks)


def _parse_opaque(data: bytes) -> tuple[OpaqueField, ...]:
    fields: list[OpaqueField] = []
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise EvidenceMalformed("opaque data ends inside a field header")
        ftype, size = _u(data, off, 2), _u(data, off + 2, 2)
        value = data[off + 4 : off + 4 + size]
        if len(value) != size:
            raise EvidenceMalformed(f"opaque field {ftype} is truncated")
        if any(f.type == ftype for f in fields):
            raise EvidenceMalformed(f"opaque field {ftype} is repeated")
        fields.append(OpaqueField(ftype, bytes(value)))
        off += 4 + size
    return tuple(fields)


def parse_report(data: bytes) -> AttestationReport:
    """Parse request || response, then at most the NVML buffer's zero padding.

    Raises:
        EvidenceMalformed (``evidence.malformed``): truncated, inconsistent lengths, bad blocks or fields.
        NvidiaTrailingData (``evidence.nvidia.trailing_data``): bytes after the signature that are
            not all zero, or a padded report longer than the NVML buffer.
        EvidenceUnsupported (``evidence.unsupported``): another SPDM version or message, no signature
            requested, a non-DMTF measurement block.
    """
    if len(data) < REQUEST_LEN + 42 + SIGNATURE_LEN:
        raise EvidenceMalformed("too short for a GET_MEASUREMENTS request and a signed response")
    # Request (DSP0274 Table 43).
    if data[0] not in SPDM_VERSIONS:
        raise EvidenceUnsupported(f"SPDM version {data[0]:#x} is not 1.1")
    if data[1] != GET_MEASUREMENTS:
        raise EvidenceUnsupported(f"request code {data[1]:#x} is not GET_MEASUREMENTS")
    if not data[2] & 0x01:
        raise EvidenceUnsupported("GET_MEASUREMENTS did not ask for a signature (Param1 bit 0)")
    # Response (Table 45).
    r = data[REQUEST_LEN:]
    if r[0] != data[0]:
        raise EvidenceMalformed("response SPDM version differs from the request's")
    if r[1] != MEASUREMENTS:
        raise EvidenceUnsupported(f"response code {r[1]:#x} is not MEASUREMENTS")
    n_blocks, rec_len = r[4], _u(r, 5, 3)
    if 8 + rec_len + NONCE_LEN + 2 > len(r):
        raise EvidenceMalformed("measurement record length runs past the report")
    record = r[8 : 8 + rec_len]
    off = 8 + rec_len
    responder_nonce = r[off : off + NONCE_LEN]
    opaque_len = _u(r, off + NONCE_LEN, 2)
    off += NONCE_LEN + 2
    end = off + opaque_len + SIGNATURE_LEN
    if end > len(r):
        raise EvidenceMalformed(f"report is {len(data)} bytes; its lengths say {REQUEST_LEN + end}")
    trailing = r[end:]
    if trailing and (len(data) > NVML_REPORT_BUFFER or trailing.count(0) != len(trailing)):
        raise NvidiaTrailingData(
            f"{len(trailing)} bytes follow the signature; only zero padding up to the NVML buffer "
            f"({NVML_REPORT_BUFFER} bytes in all) is accepted"
        )
    if n_blocks == 0:
        raise EvidenceMalformed("the response holds no measurement blocks")
    blocks = _parse_blocks(record, n_blocks)
    opaque = _parse_opaque(r[off : off + opaque_len])
    return AttestationReport(
        raw=bytes(data),
        spdm_version=data[0],
        request_param1=data[2],
        request_param2=data[3],
        requester_nonce=bytes(data[4:36]),
        slot_id=data[36],
        number_of_blocks=n_blocks,
        blocks=blocks,
        responder_nonce=bytes(responder_nonce),
        opaque=opaque,
        signature=bytes(r[end - SIGNATURE_LEN : end]),
        padding=len(trailing),
    )
