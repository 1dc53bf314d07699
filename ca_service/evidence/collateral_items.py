"""Collateral given to a verifier, each item recognised by its content.

Callers (CLI ``--collateral FILE``, API, collateral cache) hand over raw bytes; this module sorts
them into certificates (PEM or DER, chains split), CRLs (DER or PEM), OCSP responses (DER, RFC 6960
``OCSPResponse``: NVIDIA's device chain), JSON documents (Intel ``QuoteCollateralV3`` and friends)
and XML documents (NVIDIA RIM SWID tags). A DER item shaped like an OCSPResponse (a SEQUENCE whose
first element is the ENUMERATED responseStatus) that does not parse is kept as unparsed, so the
verifier that needs OCSP reports it as an unusable revocation source rather than as unknown input. Raw bytes are kept so
verifiers can check signatures over the exact bytes and record their digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import ocsp

from ca_service import boundedjson
from ca_service.crypto.certs import parse_fully
from ca_service.errors import CollateralInvalid


@dataclass(frozen=True)
class Collateral:
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    json_documents: tuple[bytes, ...] = ()
    xml_documents: tuple[bytes, ...] = ()
    raw: tuple[bytes, ...] = ()
    ocsp_responses: tuple[ocsp.OCSPResponse, ...] = ()
    ocsp_raw: tuple[bytes, ...] = ()
    ocsp_unparsed: int = 0

    def digests(self) -> dict[str, str]:
        """SHA-256 of every raw item, keyed by a short label (what the item was recognised as)."""
        out: dict[str, str] = {}
        for i, item in enumerate(self.raw):
            out[f"item{i}:{_classify(item)}"] = hashlib.sha256(item).hexdigest()
        return out


def _looks_like_ocsp_response(item: bytes) -> bool:
    """DER ``OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, ... }`` (RFC 6960 4.2.1): a
    certificate or a CRL starts its SEQUENCE with another SEQUENCE instead."""
    if len(item) < 5 or item[0] != 0x30:
        return False
    n = item[1]
    off = 2 if n < 0x80 else 2 + (n & 0x7F) if 0x81 <= n <= 0x84 else -1
    return off > 0 and item[off : off + 2] == b"\x0a\x01"


def _classify(item: bytes) -> str:
    head = item.lstrip()[:64]
    if head.startswith(b"-----BEGIN X509 CRL"):
        return "crl"
    if head.startswith(b"-----BEGIN"):
        return "certificates"
    if head.startswith((b"{", b"[")):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    if _looks_like_ocsp_response(item):
        return "ocsp"
    if item[:1] == b"\x30":
        try:
            x509.load_der_x509_certificate(item)
            return "certificate"
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: a version byte changed
            pass
        try:
            x509.load_der_x509_crl(item)
            return "crl"
        except (ValueError, x509.InvalidVersion):
            pass
    return "unknown"


def load_collateral(items: Iterable[bytes]) -> Collateral:
    """Sort raw collateral items by content.

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): an item is none of the known kinds.
    """
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    jsons: list[bytes] = []
    xmls: list[bytes] = []
    raw: list[bytes] = []
    ocsps: list[ocsp.OCSPResponse] = []
    ocsp_raw: list[bytes] = []
    unparsed = 0
    for item in items:
        raw.append(item)
        kind = _classify(item)
        try:
            if kind == "crl":
                crls.append(
                    x509.load_pem_x509_crl(item) if item.lstrip().startswith(b"-----") else x509.load_der_x509_crl(item)
                )
            elif kind == "certificates":
                certs.extend(x509.load_pem_x509_certificates(item))
            elif kind == "certificate":
                certs.append(x509.load_der_x509_certificate(item))
            elif kind == "json":
                boundedjson.loads(item)
                jsons.append(item)
            elif kind == "xml":
                xmls.append(item)
            elif kind == "ocsp":
                try:
                    ocsps.append(ocsp.load_der_ocsp_response(item))
                    ocsp_raw.append(item)
                except (ValueError, TypeError, x509.InvalidVersion):  # the verifier reports it: invalid
                    unparsed += 1
            else:
                raise CollateralInvalid("collateral item is not a certificate, CRL, JSON or XML document")
        except (ValueError, UnicodeDecodeError, x509.InvalidVersion) as exc:
            raise CollateralInvalid(f"collateral item of kind {kind} cannot be parsed") from exc
    parsed: list[x509.Certificate | x509.CertificateRevocationList] = [*certs, *crls]
    for obj in parsed:  # parse at the edge: pyca parses lazily and verifiers read fields unguarded
        try:
            parse_fully(obj)
        except ValueError as exc:
            raise CollateralInvalid("a collateral certificate or CRL has a malformed field") from exc
    return Collateral(tuple(certs), tuple(crls), tuple(jsons), tuple(xmls), tuple(raw), tuple(ocsps),
                      tuple(ocsp_raw), unparsed)
