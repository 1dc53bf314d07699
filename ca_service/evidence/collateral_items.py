"""Collateral given to a verifier, each item recognised by its content.

Callers (CLI ``--collateral FILE``, API, collateral cache) hand over raw bytes; this module sorts
them into certificates (PEM or DER, chains split), CRLs (DER or PEM), JSON documents (Intel
``QuoteCollateralV3`` and friends) and XML documents (NVIDIA RIM SWID tags). Raw bytes are kept so
verifiers can check signatures over the exact bytes and record their digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

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

    def digests(self) -> dict[str, str]:
        """SHA-256 of every raw item, keyed by a short label (what the item was recognised as)."""
        out: dict[str, str] = {}
        for i, item in enumerate(self.raw):
            out[f"item{i}:{_classify(item)}"] = hashlib.sha256(item).hexdigest()
        return out


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
    return Collateral(tuple(certs), tuple(crls), tuple(jsons), tuple(xmls), tuple(raw))
