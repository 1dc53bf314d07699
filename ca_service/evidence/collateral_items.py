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
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service import boundedjson
from ca_service.crypto.certs import parse_fully
from ca_service.errors import CollateralInvalid
from ca_service.evidence.intel.cache import LRU


@dataclass(frozen=True)
class Collateral:
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    json_documents: tuple[bytes, ...] = ()
    # each JSON document as parsed here, in the same order, or None where the same bytes parsed
    # before (:func:`_parse_json`): a verifier reads it instead of parsing again (never changed in place)
    json_values: tuple[object, ...] = ()
    xml_documents: tuple[bytes, ...] = ()
    raw: tuple[bytes, ...] = ()
    ocsp_responses: tuple[ocsp.OCSPResponse, ...] = ()
    ocsp_raw: tuple[bytes, ...] = ()
    ocsp_unparsed: int = 0
    # items that are CRLs by their outer shape but cannot be parsed (only with keep_unparsed_crls):
    # the verifier reports its revocation source unusable instead of the whole collateral refused
    unparsed_crls: tuple[bytes, ...] = ()

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
            return "crl" if _crl_shaped(item) else "unknown"
    return "unknown"


def _tlv(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, start of contents, end of contents) of the DER element at ``pos``, None if it overruns."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + n > len(data):
            return None
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return (tag, pos, pos + length) if pos + length <= len(data) else None


def _crl_shaped(der: bytes) -> bool:
    """A DER CertificateList by its outer shape (RFC 5280 section 5.1): SEQUENCE { SEQUENCE { [INTEGER
    version,] SEQUENCE signature, SEQUENCE issuer, Time thisUpdate ...} ...}. A certificate's TBS has a
    Validity SEQUENCE where a CRL has thisUpdate. Only decides how an unparseable item is reported."""
    outer = _tlv(der, 0)
    tbs = _tlv(der, outer[1]) if outer is not None and outer[0] == 0x30 else None
    if tbs is None or tbs[0] != 0x30:
        return False
    pos, tags = tbs[1], list[int]()
    while pos < tbs[2] and len(tags) < 4:
        el = _tlv(der, pos)
        if el is None:
            return False
        tags.append(el[0])
        pos = el[2]
    if tags[:1] == [0x02]:
        tags = tags[1:]
    return tags[:3] in ([0x30, 0x30, 0x17], [0x30, 0x30, 0x18])


# JSON items seen to parse (within boundedjson's depth bound) before, by their SHA-256: a warm
# request's collateral, the same bytes again, is not parsed again only to be kept (~130 µs of a
# ~600 µs warm TDX quote). Only successes are kept.
_GOOD_JSON: LRU[bool] = LRU(256)


def _parse_json(item: bytes) -> object | None:
    """``item`` parsed, or None when the same bytes parsed before: then a verifier that needs the
    value parses them itself (the Intel verifier does so only when its own cache misses).

    Raises:
        ValueError: not JSON, or nested too deep (boundedjson).
    """
    parsed: list[object] = []

    def parse() -> bool:
        parsed.append(boundedjson.loads(item))
        return True

    _GOOD_JSON.get_or_compute(hashlib.sha256(item).digest(), parse)
    return parsed[0] if parsed else None


def clear_cache() -> None:
    _GOOD_JSON.clear()


def load_collateral(items: Iterable[bytes], *, keep_unparsed_crls: bool = False) -> Collateral:
    """Sort raw collateral items by content.

    ``keep_unparsed_crls``: an item that is a CRL by its shape (PEM ``X509 CRL``, or a DER
    CertificateList) but cannot be parsed goes to ``unparsed_crls`` for the verifier to report as an
    unusable revocation source (``revocation.amd_crl_invalid``) instead of being refused here.

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): an item is none of the known kinds.
    """
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    jsons: list[bytes] = []
    json_values: list[object] = []
    xmls: list[bytes] = []
    raw: list[bytes] = []
    ocsps: list[ocsp.OCSPResponse] = []
    ocsp_raw: list[bytes] = []
    unparsed = 0
    unparsed_crls: list[bytes] = []
    for item in items:
        raw.append(item)
        kind = _classify(item)
        try:
            if kind == "crl":
                try:
                    crls.append(x509.load_pem_x509_crl(item) if item.lstrip().startswith(b"-----")
                                else x509.load_der_x509_crl(item))
                except Exception as exc:  # noqa: BLE001 - pyca boundary: InvalidVersion is no ValueError
                    if not keep_unparsed_crls:
                        raise ValueError("CRL cannot be parsed") from exc
                    unparsed_crls.append(item)
            elif kind == "certificates":
                certs.extend(x509.load_pem_x509_certificates(item))
            elif kind == "certificate":
                certs.append(x509.load_der_x509_certificate(item))
            elif kind == "json":
                json_values.append(_parse_json(item))
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
    for cert in certs:  # parse at the edge: pyca parses lazily and verifiers read fields unguarded
        try:
            parse_fully(cert)
        except ValueError as exc:
            raise CollateralInvalid("a collateral certificate or CRL has a malformed field") from exc
    good_crls: list[x509.CertificateRevocationList] = []
    for crl in crls:
        try:
            parse_fully(crl)
        except ValueError as exc:
            if not keep_unparsed_crls:
                raise CollateralInvalid("a collateral certificate or CRL has a malformed field") from exc
            unparsed_crls.append(crl.public_bytes(Encoding.DER))
        else:
            good_crls.append(crl)
    return Collateral(tuple(certs), tuple(good_crls), tuple(jsons), tuple(json_values), tuple(xmls), tuple(raw),
                      tuple(ocsps), tuple(ocsp_raw), unparsed, tuple(unparsed_crls))
