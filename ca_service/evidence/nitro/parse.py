"""Parse an AWS Nitro Enclaves attestation document: COSE_Sign1 (RFC 9052) around a CBOR map.

What a client sends is what the Nitro Secure Module returns from ``Attestation``: the bare
COSE_Sign1 array (``0x84 ...``), or the same array under CBOR tag 18 (RFC 9052 section 4.2).
Anything else (for instance dstack's SCALE framing, as in the vectors' ``nitro_attestation.bin``:
a 4-byte prefix, then the COSE_Sign1, then 151 unsigned bytes of dstack's own fields) is refused
as malformed: framing bytes are unsigned, and scanning for the array marker inside them would make
the verifier accept inputs nobody signed. Callers unwrap their own transport first.

Field rules follow AWS "Nitro Enclaves attestation process", section "Attestation document
specification" (aws-nitro-enclaves-nsm-api docs/attestation_process.md, section 3.2): exactly the
nine keys below, ``digest`` "SHA384", PCR indexes 0..31 with 32/48/64-byte values, certificates of
1..1024 bytes, ``public_key`` 1..1024 bytes, ``user_data`` and ``nonce`` 0..512 bytes. Signed bytes
are kept verbatim: the signature is over them, never over a re-encoding (the NSM encodes the
payload as an indefinite-length map, which a re-encoder would not reproduce).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cbor2

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported

COSE_SIGN1_TAG = 18
ALG_ES384 = -35  # COSE algorithm ES384 (RFC 9053 section 2.1)
SIGNATURE_LEN = 96  # ES384: r || s, 48 bytes each
MAX_CERT_LEN = 1024
MAX_USER_FIELD = 512
DOC_KEYS = frozenset(
    {"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"}
)
_OPTIONAL = frozenset({"public_key", "user_data", "nonce"})


@dataclass(frozen=True)
class CoseSign1:
    """RFC 9052 section 4.2: [protected bstr, unprotected map, payload bstr, signature bstr]."""

    protected: bytes
    algorithm: int
    payload: bytes
    signature: bytes
    tagged: bool

    def sig_structure(self) -> bytes:
        """RFC 9052 section 4.4: ["Signature1", body_protected, external_aad = b"", payload]."""
        return bytes(cbor2.dumps(["Signature1", self.protected, b"", self.payload]))


@dataclass(frozen=True)
class AttestationDocument:
    """The signed payload, fields as AWS names them; certificates kept as DER."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: tuple[tuple[int, bytes], ...]  # sorted by index
    certificate: bytes
    cabundle: tuple[bytes, ...]  # root first, as the NSM sends it
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    def pcr(self, index: int) -> bytes | None:
        for i, value in self.pcrs:
            if i == index:
                return value
        return None

    @property
    def debug(self) -> bool:
        """Nitro marks an enclave started with ``--debug-mode`` by PCR0, PCR1 and PCR2 all zero
        (AWS "Where to get an enclave's measurements": "in debug mode the PCRs contain all zeros")."""
        values = [self.pcr(i) for i in (0, 1, 2)]
        return all(v is not None and not any(v) for v in values)


@dataclass(frozen=True)
class NitroEvidence:
    cose: CoseSign1
    document: AttestationDocument


def _loads_exact(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data`` (cbor2.loads ignores trailing bytes)."""
    fp = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, but also ValueError/RecursionError...
        raise EvidenceMalformed(f"{what} is not well-formed CBOR") from exc
    if fp.tell() != len(data):
        raise EvidenceMalformed(f"{what} has {len(data) - fp.tell()} bytes after its CBOR item")
    return item


def parse_cose_sign1(data: bytes) -> CoseSign1:
    """Parse a COSE_Sign1 message, tagged (18) or untagged.

    Raises:
        EvidenceMalformed (``evidence.malformed``): not a COSE_Sign1 array of four well-typed items.
        EvidenceUnsupported (``evidence.unsupported``): another tag, or an algorithm other than ES384.
    """
    if data[:1] not in (b"\x84", b"\xd2"):
        raise EvidenceMalformed("not a COSE_Sign1: expected a 4-item CBOR array (0x84) or tag 18 (0xd2)")
    item = _loads_exact(data, "COSE_Sign1")
    tagged = False
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise EvidenceUnsupported(f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item, tagged = item.value, True
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise EvidenceMalformed("COSE_Sign1 is not an array of 4 items")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise EvidenceMalformed("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not hasattr(unprotected, "items"):
        raise EvidenceMalformed("COSE_Sign1 unprotected header is not a map")
    header = _loads_exact(protected, "COSE protected header") if protected else {}
    if not hasattr(header, "get"):
        raise EvidenceMalformed("COSE protected header is not a map")
    alg = header.get(1)
    if alg is None:
        raise EvidenceMalformed("COSE protected header has no algorithm (label 1)")
    if alg != ALG_ES384 or isinstance(alg, bool):
        raise EvidenceUnsupported(f"COSE algorithm {alg!r} is not ES384 (-35)")
    if len(signature) != SIGNATURE_LEN:
        raise EvidenceMalformed(f"ES384 signature is {len(signature)} bytes, not {SIGNATURE_LEN}")
    return CoseSign1(bytes(protected), ALG_ES384, bytes(payload), bytes(signature), tagged)


def _opt_bytes(doc: Any, key: str, low: int, high: int) -> bytes | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        raise EvidenceMalformed(f"{key} must be null or {low}..{high} bytes")
    return bytes(value)


def parse_document(payload: bytes) -> AttestationDocument:
    """Parse the attestation document map (AWS attestation_process.md section 3.2).

    Raises:
        EvidenceMalformed (``evidence.malformed``): a missing, unknown or ill-typed field.
        EvidenceUnsupported (``evidence.unsupported``): a digest other than SHA384.
    """
    doc = _loads_exact(payload, "attestation document")
    if not hasattr(doc, "items"):
        raise EvidenceMalformed("attestation document is not a map")
    keys = set(doc.keys())
    if not all(isinstance(k, str) for k in keys) or keys - DOC_KEYS or (DOC_KEYS - _OPTIONAL) - keys:
        raise EvidenceMalformed("attestation document fields are not the nine AWS defines")
    module_id, digest, timestamp = doc["module_id"], doc["digest"], doc["timestamp"]
    if not isinstance(module_id, str) or not module_id:
        raise EvidenceMalformed("module_id must be a non-empty text string")
    if not isinstance(digest, str):
        raise EvidenceMalformed("digest must be a text string")
    if digest != "SHA384":
        raise EvidenceUnsupported(f"PCR digest {digest!r} is not SHA384")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 < timestamp < 1 << 63:
        raise EvidenceMalformed("timestamp must be a positive integer (ms since the epoch)")
    pcrs = doc["pcrs"]
    if not hasattr(pcrs, "items") or not 1 <= len(pcrs) <= 32:
        raise EvidenceMalformed("pcrs must be a map of 1..32 entries")
    pcr_list: list[tuple[int, bytes]] = []
    for index, value in pcrs.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 32:
            raise EvidenceMalformed("PCR index must be 0..31")
        if not isinstance(value, bytes) or len(value) not in (32, 48, 64):
            raise EvidenceMalformed(f"PCR{index} must be 32, 48 or 64 bytes")
        pcr_list.append((index, bytes(value)))
    certificate, cabundle = doc["certificate"], doc["cabundle"]
    if not isinstance(certificate, bytes) or not 1 <= len(certificate) <= MAX_CERT_LEN:
        raise EvidenceMalformed(f"certificate must be 1..{MAX_CERT_LEN} bytes")
    if not isinstance(cabundle, list | tuple) or not cabundle:
        raise EvidenceMalformed("cabundle must be a non-empty array")
    if not all(isinstance(c, bytes) and 1 <= len(c) <= MAX_CERT_LEN for c in cabundle):
        raise EvidenceMalformed(f"cabundle entries must be 1..{MAX_CERT_LEN} bytes")
    return AttestationDocument(
        module_id=module_id,
        digest=digest,
        timestamp_ms=timestamp,
        pcrs=tuple(sorted(pcr_list)),
        certificate=bytes(certificate),
        cabundle=tuple(bytes(c) for c in cabundle),
        public_key=_opt_bytes(doc, "public_key", 1, 1024),
        user_data=_opt_bytes(doc, "user_data", 0, MAX_USER_FIELD),
        nonce=_opt_bytes(doc, "nonce", 0, MAX_USER_FIELD),
    )


def parse_evidence(data: bytes) -> NitroEvidence:
    """COSE_Sign1 then its payload.

    Raises:
        EvidenceMalformed, EvidenceUnsupported: see :func:`parse_cose_sign1`, :func:`parse_document`.
    """
    cose = parse_cose_sign1(data)
    return NitroEvidence(cose, parse_document(cose.payload))
