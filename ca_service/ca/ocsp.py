"""OCSP (RFC 6960) requests for one or several certificates, and their signed answers (PURE).

pyca/cryptography parses and builds OCSP with exactly one certificate per message; RFC 6960
section 4.1.1 lets a client ask about several (``requestList``), and ``openssl ocsp`` does so with
repeated ``-cert``. So the request is decoded and the response encoded here with the RFC 6960 ASN.1
module of pyasn1-alt-modules, and signed with the issuing CA's key through pyca.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc6960

from ca_service.ca.revocation import OCSP_LIFETIME

MAX_CERTS_PER_REQUEST = 64
_NONCE_OID = univ.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_REASON_CODES = {"keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
                 "cessationOfOperation": 5, "privilegeWithdrawn": 9}


class OcspMalformed(ValueError):
    """Not a DER OCSPRequest this responder can answer (-> malformedRequest)."""


@dataclass(frozen=True)
class CertId:
    """RFC 6960 section 4.1.1 CertID, with its DER kept to echo it unchanged in the answer."""

    hash_oid: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes

    def names(self, issuer: x509.Certificate) -> bool:
        """Whether the issuer name and key hashes name ``issuer`` (key hash over the BIT STRING value
        of subjectPublicKey, section 4.1.1). An unknown hash algorithm names nobody."""
        algo = _HASHES.get(self.hash_oid)
        if algo is None:
            return False
        name_h = hashes.Hash(algo())
        name_h.update(issuer.subject.public_bytes())
        key_h = hashes.Hash(algo())
        key_h.update(_key_bits(issuer))
        return name_h.finalize() == self.issuer_name_hash and key_h.finalize() == self.issuer_key_hash


@dataclass(frozen=True)
class OcspRequest:
    cert_ids: tuple[CertId, ...]
    nonce_extension: bytes | None  # the whole Extension DER, echoed (RFC 8954)


@dataclass(frozen=True)
class SingleAnswer:
    cert_id: CertId
    status: str  # good | revoked | unknown
    revoked_at: datetime | None = None
    reason: str | None = None


def _key_bits(cert: x509.Certificate) -> bytes:
    pub = cert.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    spki, _ = der_decoder.decode(pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
                                 asn1Spec=rfc5280.SubjectPublicKeyInfo())
    return bytes(spki["subjectPublicKey"].asOctets())


def parse_request(der: bytes) -> OcspRequest:
    """Decode a DER OCSPRequest with 1..64 certificates (a signature on the request is ignored).

    Raises:
        OcspMalformed: not DER, trailing bytes, no or too many certificates.
    """
    try:
        req, rest = der_decoder.decode(der, asn1Spec=rfc6960.OCSPRequest())
    except (PyAsn1Error, ValueError, TypeError) as exc:
        raise OcspMalformed("not a DER OCSPRequest") from exc
    if rest:
        raise OcspMalformed("bytes after the OCSPRequest")
    tbs = req["tbsRequest"]
    items = list(tbs["requestList"])
    if not 1 <= len(items) <= MAX_CERTS_PER_REQUEST:
        raise OcspMalformed(f"a request names 1 to {MAX_CERTS_PER_REQUEST} certificates")
    ids = []
    for item in items:
        cid = item["reqCert"]
        ids.append(CertId(str(cid["hashAlgorithm"]["algorithm"]), bytes(cid["issuerNameHash"]),
                          bytes(cid["issuerKeyHash"]), int(cid["serialNumber"]), der_encoder.encode(cid)))
    nonce = None
    if tbs["requestExtensions"].isValue:
        for ext in tbs["requestExtensions"]:
            if ext["extnID"] == _NONCE_OID:
                if len(bytes(ext["extnValue"])) > 130:  # RFC 8954: a nonce of at most 32 octets
                    raise OcspMalformed("the nonce is too long")
                nonce = der_encoder.encode(ext)
    return OcspRequest(tuple(ids), nonce)


def _gtime(t: datetime) -> str:
    """GeneralizedTime text, whole seconds, Z (RFC 5280 section 4.1.2.5.2); assigned as text so
    pyasn1 applies each component's own (possibly explicit) tag."""
    return t.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def _single(answer: SingleAnswer, now: datetime) -> rfc6960.SingleResponse:
    sr = rfc6960.SingleResponse()
    cid, _ = der_decoder.decode(answer.cert_id.der, asn1Spec=rfc6960.CertID())
    sr["certID"] = cid
    status = sr["certStatus"]
    if answer.status == "good":
        status["good"] = ""
    elif answer.status == "revoked":
        info = status["revoked"]
        info["revocationTime"] = _gtime(answer.revoked_at or now)
        code = _REASON_CODES.get(answer.reason or "")
        if code is not None:
            info["revocationReason"] = code
    else:
        status["unknown"] = ""
    sr["thisUpdate"] = _gtime(now)
    sr["nextUpdate"] = _gtime(now + OCSP_LIFETIME)
    return sr


def _signature(key: Any) -> tuple[str, Any]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "1.3.101.112", None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP384R1):
            return "1.2.840.10045.4.3.3", ec.ECDSA(hashes.SHA384())
        return "1.2.840.10045.4.3.2", ec.ECDSA(hashes.SHA256())
    raise TypeError("the OCSP responder signs with an EC or Ed25519 issuing key")


def build_response(answers: Sequence[SingleAnswer], *, nonce_extension: bytes | None, issuer_key: Any,
                   issuer: x509.Certificate, now: datetime) -> bytes:
    """A successful, signed ``id-pkix-ocsp-basic`` OCSPResponse (DER) with one SingleResponse per
    requested certificate, in request order; the CA answers as its own responder (section 4.2.2.2),
    identified by the SHA-1 of its key (``byKey``), and echoes the request's nonce."""
    now = now.replace(microsecond=0)
    rd = rfc6960.ResponseData()
    rd["responderID"]["byKey"] = hashlib.sha1(_key_bits(issuer)).digest()  # noqa: S324  (RFC 6960 KeyHash)
    rd["producedAt"] = _gtime(now)
    for a in answers:
        rd["responses"].append(_single(a, now))
    if nonce_extension is not None:
        ext, _ = der_decoder.decode(nonce_extension, asn1Spec=rfc5280.Extension())
        rd["responseExtensions"].append(ext)
    tbs = der_encoder.encode(rd)
    oid, algo = _signature(issuer_key)
    sig = issuer_key.sign(tbs) if algo is None else issuer_key.sign(tbs, algo)
    basic = rfc6960.BasicOCSPResponse()
    basic["tbsResponseData"] = rd
    basic["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier(oid)
    basic["signature"] = univ.BitString.fromOctetString(sig)
    resp = rfc6960.OCSPResponse()
    resp["responseStatus"] = "successful"
    resp["responseBytes"]["responseType"] = rfc6960.id_pkix_ocsp_basic
    resp["responseBytes"]["response"] = der_encoder.encode(basic)
    return bytes(der_encoder.encode(resp))
