"""Revocation of an issued certificate, as a relying party checks it (RFC 6960 OCSP, RFC 5280 CRL).

Pure: the bytes of a response or CRL come in, a result goes out. Fetching (OCSP at the AIA URL,
the CRL at the CDP) is the caller's, through a small ``Fetcher``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp

# (url, body or None, content type) -> response bytes; raises on any transport failure
Fetcher = Callable[[str, bytes | None, str | None], bytes]
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class RevocationResult:
    """``state``: ``good``, ``revoked`` or ``unavailable`` (not checked: never a pass)."""

    state: str
    source: str
    detail: str
    revoked_at: datetime | None = None
    reason: str | None = None


def _verify_sig(issuer: x509.Certificate, signature: bytes, data: bytes, algo: hashes.HashAlgorithm | None) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(signature, data, padding.PKCS1v15(), algo)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _reason(value: x509.ReasonFlags | None) -> str:
    return "unspecified" if value is None else str(value.value)  # RFC 5280 names: keyCompromise, ...


def check_crl(leaf: x509.Certificate, issuer: x509.Certificate, data: bytes, at: datetime,
              source: str = "CRL") -> RevocationResult:
    """The leaf's state in a CRL (DER or PEM) signed by ``issuer`` and current at ``at``."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError:
        return RevocationResult("unavailable", source, "the CRL does not parse")
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return RevocationResult("unavailable", source, "the CRL is not signed by the certificate's issuer")
    next_update = crl.next_update_utc
    if crl.last_update_utc > at + CLOCK_SKEW or next_update is None or next_update < at:
        return RevocationResult("unavailable", source, f"the CRL is not current at {at.isoformat()} "
                                f"(thisUpdate {crl.last_update_utc.isoformat()}, nextUpdate "
                                f"{next_update.isoformat() if next_update else 'none'})")
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if entry is None:
        return RevocationResult("good", source, f"not on the CRL of {crl.last_update_utc.isoformat()}")
    try:
        reason = _reason(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason)
    except x509.ExtensionNotFound:
        reason = "unspecified"
    when = entry.revocation_date_utc
    return RevocationResult("revoked", source, f"revoked at {when.isoformat()}, reason {reason}", when, reason)


def ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """A DER OCSP request for the leaf with a fresh 32-byte nonce: ``(request, nonce)``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    nonce = os.urandom(32)
    req = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256())
           .add_extension(x509.OCSPNonce(nonce), critical=False).build())
    return req.public_bytes(Encoding.DER), nonce


def check_ocsp(leaf: x509.Certificate, issuer: x509.Certificate, data: bytes, at: datetime,
               nonce: bytes | None = None, source: str = "OCSP") -> RevocationResult:
    """The leaf's state in a DER OCSP response signed by its issuer (the CA is its own responder),
    current at ``at``, and echoing ``nonce`` when one was sent."""
    try:
        resp = ocsp.load_der_ocsp_response(data)
    except ValueError:
        return RevocationResult("unavailable", source, "the OCSP response does not parse")
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return RevocationResult("unavailable", source, f"the responder answered {resp.response_status.name}")
    if not _verify_sig(issuer, resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm):
        return RevocationResult("unavailable", source, "the OCSP response is not signed by the certificate's issuer")
    if nonce is not None:
        try:
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            got = None
        if got != nonce:
            return RevocationResult("unavailable", source, "the OCSP response does not echo our nonce")
    for single in resp.responses:
        if single.serial_number != leaf.serial_number:
            continue
        nxt = single.next_update_utc
        if single.this_update_utc > at + CLOCK_SKEW or (nxt is not None and nxt < at):
            return RevocationResult("unavailable", source, f"the OCSP response is not current at {at.isoformat()}")
        if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
            return RevocationResult("good", source, f"good as of {single.this_update_utc.isoformat()}")
        if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            when = single.revocation_time_utc
            reason = _reason(single.revocation_reason)
            return RevocationResult("revoked", source, f"revoked at {when.isoformat() if when else '?'}, "
                                    f"reason {reason}", when, reason)
        return RevocationResult("unavailable", source, "the responder does not know this certificate")
    return RevocationResult("unavailable", source, "the OCSP response does not cover this certificate")


def _urls(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    ocsp_urls: list[str] = []
    crl_urls: list[str] = []
    try:
        for ad in leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value:
            if ad.access_method == x509.oid.AuthorityInformationAccessOID.OCSP:
                ocsp_urls.append(str(ad.access_location.value))
    except x509.ExtensionNotFound:
        pass
    try:
        for dp in leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value:
            crl_urls += [str(n.value) for n in (dp.full_name or []) if isinstance(n, x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    return ocsp_urls, crl_urls


def check_online(leaf: x509.Certificate, issuer: x509.Certificate, at: datetime, fetch: Fetcher) -> RevocationResult:
    """OCSP at the leaf's AIA URL (with a nonce), falling back to the CRL at its CDP."""
    ocsp_urls, crl_urls = _urls(leaf)
    tried: list[str] = []
    for url in ocsp_urls:
        req, nonce = ocsp_request(leaf, issuer)
        try:
            result = check_ocsp(leaf, issuer, fetch(url, req, "application/ocsp-request"), at, nonce,
                                source=f"OCSP {url}")
        except Exception as exc:  # the fetcher's transport failure: fall back to the CRL
            tried.append(f"OCSP {url}: {type(exc).__name__}")
            continue
        if result.state != "unavailable":
            return result
        tried.append(f"{result.source}: {result.detail}")
    for url in crl_urls:
        try:
            result = check_crl(leaf, issuer, fetch(url, None, None), at, source=f"CRL {url}")
        except Exception as exc:  # the fetcher's transport failure
            tried.append(f"CRL {url}: {type(exc).__name__}")
            continue
        if result.state != "unavailable":
            return result
        tried.append(f"{result.source}: {result.detail}")
    if not tried:
        return RevocationResult("unavailable", "none", "the certificate names no OCSP responder and no CRL")
    return RevocationResult("unavailable", "online", "; ".join(tried))


def requests_fetcher(timeout: float = 10.0) -> Fetcher:
    """A ``Fetcher`` over HTTP(S) with requests (the CLI's; tests and applications inject their own)."""
    import requests

    def fetch(url: str, body: bytes | None, content_type: str | None) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise ValueError("only http(s) revocation URLs are fetched")
        if body is None:
            r = requests.get(url, timeout=timeout)
        else:
            r = requests.post(url, data=body, headers={"Content-Type": content_type or "application/octet-stream"},
                              timeout=timeout)
        r.raise_for_status()
        return r.content

    return fetch
