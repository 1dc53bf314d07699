"""Revocation of the NVIDIA device chain by OCSP (RFC 6960), from responses kept as collateral.

NVIDIA publishes the revocation state of its device certificates only through its OCSP responder
(``https://ocsp.ndis.nvidia.com``, CertID hashed with SHA-384, as nvtrust's ``cc_admin_utils`` and
other verifiers request it). A CA or a relying party that is offline, or that wants to judge by the
answers it kept, gives the DER responses as collateral; they are judged here as of ``at``.

Steps, for every certificate of the chain except the pinned root and the attestation-key leaf
(the GSP FMC "LF" certificate is generated on demand by the GPU and not registered with the
responder, so NVIDIA's verifiers start one above it):

1. Find a single response whose CertID (issuerNameHash, issuerKeyHash, serialNumber; SHA-1 or
   SHA-2) names this certificate and its issuer in the verified chain. None: ``missing``.
2. The response is ``successful`` and its status for the certificate is ``good``; ``revoked`` is
   ``evidence.certificate_revoked``; ``unknown`` or an unsuccessful answer: ``invalid``.
3. Signer (RFC 6960 section 4.2.2.2): the issuer itself, or a certificate in the response issued
   directly by the issuer with extended key usage id-kp-OCSPSigning, valid at ``at``; the
   ResponderID names the signer; the signature over tbsResponseData verifies with its key.
   A root carried in the response is never trusted: the issuer comes from the chain verified to
   the pinned NVIDIA Device Identity CA. Otherwise: ``bad_signature``.
4. ``thisUpdate <= at <= nextUpdate``; a response without nextUpdate is ``invalid``; outside
   the window: ``expired``.

Offline responses carry no nonce of ours (the CA did not ask for them now), so the nonce
extension is not required; freshness comes from the validity window. The worst state over the
chain is reported: ``good``, or why revocation is unchecked (``missing`` < ``expired`` <
``invalid`` < ``bad_signature``); its refusal code is ``revocation.nvidia_ocsp_<state>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca_service.errors import CertificateRevoked
from ca_service.evidence.nvidia.chain import Chain

ITEM = "nvidia_ocsp"
GOOD, MISSING, EXPIRED, INVALID, BAD_SIGNATURE = "good", "missing", "expired", "invalid", "bad_signature"
_ORDER = (GOOD, MISSING, EXPIRED, INVALID, BAD_SIGNATURE)
_CERTID_HASHES = (hashes.SHA1, hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclass(frozen=True)
class CertStatus:
    subject: str
    serial: str
    state: str
    detail: str
    next_update: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {"subject": self.subject, "serial": self.serial, "state": self.state, "detail": self.detail,
                "next_update": self.next_update.isoformat() if self.next_update else None}


@dataclass(frozen=True)
class OcspResult:
    state: str  # the worst over the chain
    certificates: tuple[CertStatus, ...]
    unparsed: int  # collateral items that looked like OCSP responses but did not parse

    @property
    def next_update(self) -> datetime | None:
        dates = [c.next_update for c in self.certificates if c.next_update is not None]
        return min(dates) if dates else None

    @property
    def detail(self) -> str:
        bad = [c for c in self.certificates if c.state != GOOD]
        if not bad:
            return (f"{len(self.certificates)} certificates of the device chain good by OCSP (signed by "
                    "their issuer or its designated responder, valid at the verification time)")
        first = bad[0]
        return f"{first.subject}: {first.detail}"

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "certificates": [c.to_json() for c in self.certificates],
                "unparsed_responses": self.unparsed}


def _name(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except Exception:  # a mangled name: lazily parsed, any error here
        return "a certificate with an unparsable subject"


def _cert_ids(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """(issuerNameHash, issuerKeyHash) per CertID hash algorithm, as an OCSP request would carry."""
    out = {}
    for alg in _CERTID_HASHES:
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, alg()).build()
        out[alg.name] = (req.issuer_name_hash, req.issuer_key_hash)
    return out


def _single_for(resp: ocsp.OCSPResponse, cert: x509.Certificate,
                ids: dict[str, tuple[bytes, bytes]]) -> ocsp.OCSPSingleResponse | None:
    for single in resp.responses:
        try:
            alg = single.hash_algorithm.name
        except UnsupportedAlgorithm:
            continue
        if alg in ids and (single.issuer_name_hash, single.issuer_key_hash) == ids[alg] \
                and single.serial_number == cert.serial_number:
            return single
    return None


def _verify_with(key: object, signature: bytes, data: bytes, hash_alg: hashes.HashAlgorithm | None) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and hash_alg is not None:
            key.verify(signature, data, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey) and hash_alg is not None:
            key.verify(signature, data, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _names_signer(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    """The ResponderID (byName or byKey, RFC 6960 section 4.2.1) names ``signer``."""
    try:
        if resp.responder_name is not None:
            return bool(resp.responder_name == signer.subject)
        key_hash = x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest  # SHA-1 of the key bits
        return resp.responder_key_hash == key_hash
    except Exception:  # an unparsable name or key in hostile input: it names nothing
        return False


def _delegate_ok(cand: x509.Certificate, issuer: x509.Certificate, at: datetime) -> bool:
    """RFC 6960 section 4.2.2.2: issued directly by the CA, id-kp-OCSPSigning, valid at ``at``."""
    try:
        cand.verify_directly_issued_by(issuer)
        eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        valid = cand.not_valid_before_utc <= at <= cand.not_valid_after_utc
    except Exception:  # ValueError, InvalidSignature, ExtensionNotFound, a mangled extension: not a delegate
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku and valid


def signed_by_issuer_or_delegate(resp: ocsp.OCSPResponse, issuer: x509.Certificate, at: datetime) -> bool:
    """Step 3: signed by ``issuer``, or by a certificate the response carries that ``issuer`` designated."""
    try:
        data, signature, hash_alg = resp.tbs_response_bytes, resp.signature, resp.signature_hash_algorithm
        embedded = list(resp.certificates)
    except Exception:  # an algorithm or field cryptography cannot read: not verifiable
        return False
    if _names_signer(resp, issuer) and _verify_with(issuer.public_key(), signature, data, hash_alg):
        return True
    return any(_names_signer(resp, c) and _delegate_ok(c, issuer, at)
               and _verify_with(c.public_key(), signature, data, hash_alg) for c in embedded)


def _status_of(cert: x509.Certificate, issuer: x509.Certificate, responses: Sequence[ocsp.OCSPResponse],
               at: datetime) -> CertStatus:
    subject, serial = _name(cert), format(cert.serial_number, "x")
    ids = _cert_ids(cert, issuer)
    found: list[tuple[ocsp.OCSPResponse, ocsp.OCSPSingleResponse]] = []
    for resp in responses:
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            continue
        try:
            single = _single_for(resp, cert, ids)
        except Exception:  # a response cryptography parses lazily and cannot read: not about this cert
            single = None
        if single is not None:
            found.append((resp, single))
    if not found:
        unsuccessful = any(r.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL for r in responses)
        if unsuccessful:
            return CertStatus(subject, serial, INVALID, "an OCSP response given is not a successful answer")
        return CertStatus(subject, serial, MISSING, "no OCSP response names this certificate")
    # one usable answer suffices; otherwise the least bad reason
    judged = [_judge(subject, serial, resp, single, issuer, at) for resp, single in found]
    return min(judged, key=lambda s: _ORDER.index(s.state))


def _judge(subject: str, serial: str, resp: ocsp.OCSPResponse, single: ocsp.OCSPSingleResponse,
           issuer: x509.Certificate, at: datetime) -> CertStatus:
    if not signed_by_issuer_or_delegate(resp, issuer, at):
        return CertStatus(subject, serial, BAD_SIGNATURE,
                          "OCSP response is not signed by the issuer or a responder it designated (RFC 6960 4.2.2.2)")
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if next_update is None:
        return CertStatus(subject, serial, INVALID, "OCSP response has no nextUpdate")
    if not this_update <= at <= next_update:
        return CertStatus(subject, serial, EXPIRED, f"OCSP response is valid {this_update.isoformat()}.."
                          f"{next_update.isoformat()}, not at {at.isoformat()}", next_update)
    if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason.value if single.revocation_reason else "unspecified"
        when = single.revocation_time_utc.isoformat() if single.revocation_time_utc else "?"
        raise CertificateRevoked(f"NVIDIA OCSP: {subject} (serial {serial}) is revoked since {when} ({reason})",
                                 item=ITEM)
    if single.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        return CertStatus(subject, serial, INVALID, "OCSP status is unknown")
    return CertStatus(subject, serial, GOOD, f"good until {next_update.isoformat()}", next_update)


def check_ocsp(chain: Chain, responses: Sequence[ocsp.OCSPResponse], at: datetime, *, unparsed: int = 0
               ) -> OcspResult:
    """Steps 1-4 above for ``chain`` (root first, verified to the pin) as of ``at``.

    Raises:
        CertificateRevoked (``evidence.certificate_revoked``): a good-signed, valid response says revoked.
    """
    certs = chain.certificates
    statuses = tuple(_status_of(certs[i], certs[i - 1], responses, at) for i in range(len(certs) - 2, 0, -1))
    worst = max((s.state for s in statuses), key=_ORDER.index, default=MISSING)
    if unparsed and worst in (GOOD, MISSING):
        worst = INVALID  # something meant as an OCSP response that no one can read
    return OcspResult(worst, statuses, unparsed)
