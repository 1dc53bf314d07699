"""Intel DCAP quote parsing: bytes -> frozen structs (SGX quote v3, TDX quote v4 and v5).

Layout references (all little-endian):

- Intel SGX ECDSA Quote Library API, Appendix A.3 "ECDSA Quote Format" (v3): header, ISV enclave
  report, quote signature data (A.4).
- Intel TDX DCAP Quoting Library API, Appendix A.3 "Version 4 Quote Format" and A.3.x "Version 5":
  header, TD report body (TD 1.0 / TD 1.5), v5 body descriptor (type u16, size u32), quote signature
  data with certification data type 6 (QE report certification data) wrapping type 5 (PCK chain).

Only what the spec defines is accepted; bytes after the signature data are ignored, as Intel's and
dcap-qvl's parsers do (real quotes arrive zero-padded).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported

HEADER_LEN = 48
SGX_REPORT_LEN = 384
TD10_REPORT_LEN = 584
TD15_REPORT_LEN = 648
SIG_LEN = 64
ATT_KEY_LEN = 64
QE_AUTH_DATA_LEN = 32

TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_TYPE_ECDSA_P256 = 2
# A.3 header: QE vendor ID of the Intel quoting enclave.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# A.3.x (v5) body types.
BODY_SGX = 1
BODY_TD10 = 2
BODY_TD15 = 3
_BODY_LEN = {BODY_SGX: SGX_REPORT_LEN, BODY_TD10: TD10_REPORT_LEN, BODY_TD15: TD15_REPORT_LEN}

# A.4 certification data types.
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """SGX REPORT body (384 bytes): the ISV enclave report of an SGX quote, and the QE report."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True, slots=True)
class TdReport:
    """TD report body: TD 1.0 (584 bytes) or TD 1.5 (648 bytes, adds TEE_TCB_SVN2 and MRSERVICETD)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    raw: bytes
    header: Header
    body: EnclaveReport | TdReport
    body_type: int  # BODY_* (v3/v4 are implied by the header)
    signed_len: int  # header + body (+ v5 body descriptor): what the attestation key signs
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_type: int
    cert_data: bytes

    @property
    def signed_region(self) -> bytes:
        return self.raw[: self.signed_len]


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EvidenceMalformed(f"quote truncated in {what}", field=what)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


_HEADER = struct.Struct("<HHIHH16s20s")


def parse_header(data: bytes) -> Header:
    """A.3 Quote Header (48 bytes)."""
    if len(data) < HEADER_LEN:
        raise EvidenceMalformed("quote shorter than its header", field="header")
    v, akt, tee, qe_svn, pce_svn, vendor, user = _HEADER.unpack_from(data, 0)
    return Header(v, akt, tee, qe_svn, pce_svn, vendor, user)


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    """A.3 / SGX SDM 38.15 REPORT body (384 bytes)."""
    if len(raw) != SGX_REPORT_LEN:
        raise EvidenceMalformed("enclave report has the wrong length", field="report")
    return EnclaveReport(
        raw=raw,
        cpu_svn=raw[0:16],
        misc_select=int.from_bytes(raw[16:20], "little"),
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        isv_prod_id=int.from_bytes(raw[256:258], "little"),
        isv_svn=int.from_bytes(raw[258:260], "little"),
        report_data=raw[320:384],
    )


def parse_td_report(raw: bytes) -> TdReport:
    """A.3.2 TD Quote Body (TD 1.0) and A.3.x TD 1.5 extension."""
    if len(raw) not in (TD10_REPORT_LEN, TD15_REPORT_LEN):
        raise EvidenceMalformed("TD report has the wrong length", field="report")
    r = raw
    ext = len(raw) == TD15_REPORT_LEN
    return TdReport(
        tee_tcb_svn=r[0:16],
        mr_seam=r[16:64],
        mr_signer_seam=r[64:112],
        seam_attributes=r[112:120],
        td_attributes=r[120:128],
        xfam=r[128:136],
        mr_td=r[136:184],
        mr_config_id=r[184:232],
        mr_owner=r[232:280],
        mr_owner_config=r[280:328],
        rtmr=(r[328:376], r[376:424], r[424:472], r[472:520]),
        report_data=r[520:584],
        tee_tcb_svn2=r[584:600] if ext else None,
        mr_service_td=r[600:648] if ext else None,
    )


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX v3 or TDX v4/v5 ECDSA-P256 quote.

    Raises:
        EvidenceMalformed (``evidence.malformed``): truncated or inconsistent lengths.
        EvidenceUnsupported (``evidence.unsupported``): a version, TEE type, key type, body type or
            certification data type this verifier does not handle.
    """
    header = parse_header(data)
    # A.3 header checks: version, attestation key type, TEE type.
    if header.version not in (3, 4, 5):
        raise EvidenceUnsupported(f"quote version {header.version} is not supported", field="version")
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise EvidenceUnsupported("attestation key type is not ECDSA-256-with-P-256", field="att_key_type")
    if header.tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise EvidenceUnsupported(f"TEE type {header.tee_type:#x} is not supported", field="tee_type")
    if header.version == 3 and header.tee_type != TEE_TYPE_SGX:
        raise EvidenceUnsupported("a v3 quote must be an SGX quote", field="tee_type")
    rd = _Reader(data, HEADER_LEN)
    if header.version == 5:
        # A.3.x v5 Quote Body descriptor: type (u16) and size (u32) precede the body.
        body_type = rd.u16("body_type")
        body_size = rd.u32("body_size")
        expected = _BODY_LEN.get(body_type)
        if expected is None:
            raise EvidenceUnsupported(f"quote body type {body_type} is not supported", field="body_type")
        if body_size != expected:
            raise EvidenceMalformed("quote body size does not match its type", field="body_size")
    else:
        body_type = BODY_SGX if header.tee_type == TEE_TYPE_SGX else BODY_TD10
    if (body_type == BODY_SGX) != (header.tee_type == TEE_TYPE_SGX):
        raise EvidenceUnsupported("quote body type does not match the TEE type", field="body_type")
    body_raw = rd.take(_BODY_LEN[body_type], "body")
    body: EnclaveReport | TdReport = (
        parse_enclave_report(body_raw) if body_type == BODY_SGX else parse_td_report(body_raw)
    )
    signed_len = rd.pos
    sig_len = rd.u32("signature_data_len")
    sd = _Reader(data, rd.pos, rd.pos + sig_len)
    if sd.end > len(data):
        raise EvidenceMalformed("quote signature data is truncated", field="signature_data_len")
    # A.4 Quote Signature Data: ECDSA signature (r||s), attestation public key (x||y).
    signature = sd.take(SIG_LEN, "signature")
    att_key = sd.take(ATT_KEY_LEN, "attestation_key")
    if header.version >= 4:
        # A.4 (v4/v5): certification data of type 6 wraps the QE report certification data.
        outer_type = sd.u16("certification_data_type")
        outer_len = sd.u32("certification_data_size")
        if outer_type != CERT_TYPE_QE_REPORT:
            raise EvidenceUnsupported(
                f"outer certification data type {outer_type} is not QE report (6)", field="cert_type"
            )
        outer = sd.take(outer_len, "certification_data")
        sd = _Reader(outer)
    qe_raw = sd.take(SGX_REPORT_LEN, "qe_report")
    qe_sig = sd.take(SIG_LEN, "qe_report_signature")
    auth_len = sd.u16("qe_auth_data_len")
    qe_auth = sd.take(auth_len, "qe_auth_data")
    cert_type = sd.u16("certification_data_type")
    cert_len = sd.u32("certification_data_size")
    cert_data = sd.take(cert_len, "certification_data")
    if cert_type != CERT_TYPE_PCK_CHAIN:
        # A.4 Certification Data types 1-4 (PPID forms, bare PCK leaf) need collateral we do not take.
        raise EvidenceUnsupported(
            f"certification data type {cert_type} is not a PCK certificate chain (5)", field="cert_type"
        )
    return Quote(
        raw=data,
        header=header,
        body=body,
        body_type=body_type,
        signed_len=signed_len,
        signature=signature,
        attestation_key=att_key,
        qe_report=parse_enclave_report(qe_raw),
        qe_report_signature=qe_sig,
        qe_auth_data=qe_auth,
        cert_type=cert_type,
        cert_data=cert_data,
    )
