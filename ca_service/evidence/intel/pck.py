"""X.509 for Intel DCAP: chains to the pinned Intel SGX Root CA, and the PCK certificate's SGX extensions.

References: Intel SGX PCK Certificate and CRL Profile Specification (section 1.3 "PCK Certificate",
1.5 "Intel SGX Extensions": OID 1.2.840.113741.1.13.1 with PPID, TCB (comp01..16, PCESVN, CPUSVN),
PCE-ID, FMSPC, SGX Type).

Signature and linkage checks are independent of time and are done once per chain (the caller caches
the result); validity windows are kept as data and checked at ``at`` on every call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca_service.crypto.certs import der_sha256, read_certificate
from ca_service.errors import (
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    EvidenceError,
    EvidenceMalformed,
    RootUntrusted,
)
from ca_service.evidence.intel import der
from ca_service.evidence.intel.cache import LRU
from ca_service.evidence.trust import digest_pinned

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
# Compared as DER content octets (a canonical encoding), not decoded to dotted strings.
_OID_PPID = der.encode_oid("1.2.840.113741.1.13.1.1")
_OID_TCB = der.encode_oid("1.2.840.113741.1.13.1.2")
_OID_PCEID = der.encode_oid("1.2.840.113741.1.13.1.3")
_OID_FMSPC = der.encode_oid("1.2.840.113741.1.13.1.4")
_OID_PCESVN = der.encode_oid("1.2.840.113741.1.13.1.2.17")
_COMP_OIDS = tuple(der.encode_oid(f"1.2.840.113741.1.13.1.2.{i}") for i in range(1, 17))


@dataclass(frozen=True, slots=True)
class Facts:
    """What the Intel checks read of one exact certificate, read once: pyca builds a new Name, key or
    digest on every access, and encodes the tbsCertificate again for every signature it checks."""

    cert: x509.Certificate
    sha256: str  # of the DER, lower-case hex: the form of a pin
    subject: bytes  # the subject Name as encoded (issuer links and CRLs are matched on these bytes)
    issuer: bytes  # the issuer Name as encoded, to find the CRL that covers this certificate
    subject_name: x509.Name
    not_before: datetime
    not_after: datetime
    serial: int
    key: CertificatePublicKeyTypes
    ca: bool | None  # basicConstraints cA; None: no basicConstraints, or one that does not parse
    tbs: bytes  # the exact tbsCertificate its issuer signed
    signature: bytes
    signature_algorithm: x509.ObjectIdentifier


def _read_facts(cert: x509.Certificate) -> Facts:
    read = read_certificate(cert)  # every lazily parsed field once: a mangled one fails here, not later
    try:
        ca: bool | None = read.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        ca = None
    tbs = cert.tbs_certificate_bytes
    issuer, subject = der.certificate_names(tbs)
    return Facts(cert, der_sha256(cert), subject, issuer, read.subject, read.not_before, read.not_after,
                 read.serial, read.public_key, ca, tbs, cert.signature, cert.signature_algorithm_oid)


# By the certificate itself (pyca hashes and compares a certificate by its DER): a hit returns what an
# identical certificate read. The root ends every chain of a collateral document.
_FACTS: LRU[Facts] = LRU(256)


def facts(cert: x509.Certificate) -> Facts:
    """The :class:`Facts` of ``cert``, read once per exact certificate.

    Raises:
        ValueError: a field does not parse (:func:`read_certificate`).
    """
    return _FACTS.get_or_compute(cert, partial(_read_facts, cert))


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain whose links and signatures verified up to a pinned root (leaf first)."""

    certs: tuple[x509.Certificate, ...]
    windows: tuple[Facts, ...]  # validity windows and revocation keys, checked at verification time

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certs[-1]

    def check_time(self, at: datetime) -> None:
        """Raises CertificateExpired (``evidence.certificate_expired``) outside any window."""
        for w in self.windows:
            if at < w.not_before or at > w.not_after:
                raise CertificateExpired(
                    f"certificate {subject_text(w.cert)!r} is not valid at {at.isoformat()}",
                    subject=subject_text(w.cert)
                )

    def check_revocation(self, revoked_by_issuer: dict[bytes, frozenset[int]]) -> tuple[Facts, ...]:
        """Each non-root certificate's serial against the CRL of its issuer (keyed by issuer DER name).

        Returns the certificates no CRL covers: their status is unknown, which the caller reports as a
        missing revocation source (``revocation.*_missing``), never as "not revoked".

        Raises:
            CertificateRevoked (``evidence.certificate_revoked``).
        """
        uncovered = []
        for w in self.windows[:-1]:
            serials = revoked_by_issuer.get(w.issuer)
            if serials is None:
                uncovered.append(w)
            elif w.serial in serials:
                raise CertificateRevoked("a certificate in the chain is revoked", subject=subject_text(w.cert))
        return tuple(uncovered)


def subject_text(cert: x509.Certificate) -> str:
    """The subject as RFC 4514 text, for messages: rendered once per exact certificate."""
    return _NAMES.get_or_compute(cert, partial(_render_name, cert))


def _render_name(cert: x509.Certificate) -> str:
    try:
        return facts(cert).subject_name.rfc4514_string()
    except (ValueError, KeyError):  # a mangled name must not turn a refusal into a crash
        return "<unparseable name>"


_NAMES: LRU[str] = LRU(256)


def load_pem_chain(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """Raises ChainInvalid (``evidence.chain_invalid``) if ``data`` holds no parseable certificate."""
    try:
        # pyca parses lazily: a mangled name would surface in whoever reads it first. Each exact
        # certificate is read in full once (:func:`facts`).
        certs = x509.load_pem_x509_certificates(data)
        for cert in certs:
            facts(cert)
        return tuple(certs)
    except Exception as exc:  # noqa: BLE001 - the pyca boundary: any parse failure is a chain failure
        raise ChainInvalid(f"{what} certificate chain cannot be parsed") from exc


def verify_chain(certs: Sequence[x509.Certificate], pins: frozenset[str], what: str) -> VerifiedChain:
    """Verify links and signatures of a leaf-first chain ending at a pinned root.

    Raises:
        ChainInvalid (``evidence.chain_invalid``): broken link, bad signature, non-CA issuer, not EC.
        RootUntrusted (``evidence.root_untrusted``): the last certificate's SHA-256 is not pinned.
    """
    try:
        return _verify_chain(certs, pins, what)
    except EvidenceError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyca parses lazily: a mangled field surfaces here, any type
        raise ChainInvalid(f"{what} chain holds a malformed certificate") from exc


def _verify_chain(certs: Sequence[x509.Certificate], pins: frozenset[str], what: str) -> VerifiedChain:
    if len(certs) < 2:
        raise ChainInvalid(f"{what} chain is too short")
    if len(certs) > 4:
        raise ChainInvalid(f"{what} chain is too long")
    read = [facts(c) for c in certs]
    # Never trust a root because it is carried along: its DER must match a pin.
    if not digest_pinned(read[-1].sha256, pins):
        raise RootUntrusted(f"{what} chain does not end at a pinned Intel root")
    for i, cert in enumerate(read):
        if i > 0:
            _require_ca(cert, what)
        if i == len(read) - 1:
            # The root is trusted because its exact DER is pinned, not because it signed itself:
            # its self-signature is not checked (a changed byte already fails the pin).
            break
        issuer = read[i + 1]
        if not isinstance(issuer.key, ec.EllipticCurvePublicKey):
            raise ChainInvalid(f"{what} chain issuer key is not ECDSA")
        try:
            _verify_link(cert, issuer)
        except InvalidSignature as exc:
            raise ChainInvalid(f"{what} chain link {i} does not verify", subject=subject_text(cert.cert)) from exc
    return VerifiedChain(tuple(certs), tuple(read))


# Links verified before, by the SHA-256 of both certificates' DER: one collateral document carries
# the PCK Platform CA <- Root link in the PCK CRL issuer chain as well as in the quote's PCK chain.
_LINKS: LRU[bool] = LRU(512)


def _verify_link(cert: Facts, issuer: Facts) -> None:
    """``cert`` names ``issuer`` as its issuer and carries its ECDSA signature, checked once per pair
    of exact certificates. pyca's ``verify_directly_issued_by`` makes the same two checks but encodes
    the tbsCertificate again and reads the issuer's key again (~75 µs of ~160 µs per link here).

    Raises:
        InvalidSignature: either check fails.
    """

    def verify() -> bool:
        if cert.issuer != issuer.subject:
            raise InvalidSignature("issuer name does not match")
        if not ecdsa_valid(issuer.key, cert.signature, cert.tbs, cert.signature_algorithm):
            raise InvalidSignature("signature does not verify")
        return True

    _LINKS.get_or_compute((cert.sha256, issuer.sha256), verify)


_ECDSA = {
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


def ecdsa_valid(key: object, signature: bytes, signed: bytes, algorithm: x509.ObjectIdentifier) -> bool:
    """An X.509 ECDSA signature (DER, RFC 5758 3.2) over exactly ``signed``; False for any other
    algorithm or key type, or a signature that does not verify."""
    scheme = _ECDSA.get(algorithm)
    if scheme is None or not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, signed, scheme)
    except InvalidSignature:
        return False
    return True


def _require_ca(cert: Facts, what: str) -> None:
    if cert.ca is None:
        raise ChainInvalid(f"{what} chain issuer has no basicConstraints", subject=subject_text(cert.cert))
    if not cert.ca:
        raise ChainInvalid(f"{what} chain issuer is not a CA", subject=subject_text(cert.cert))


@dataclass(frozen=True, slots=True)
class PckInfo:
    """The SGX extension values of a PCK leaf certificate (PCK profile, section 1.5)."""

    ppid: bytes
    cpu_svn: tuple[int, ...]  # SGX TCB comp01..comp16 SVNs
    pce_svn: int
    pce_id: bytes
    fmspc: bytes


def _octets(value: der.Tlv, length: int, what: str) -> bytes:
    out = der.expect(value, der.OCTET_STRING, what)
    if len(out) != length:
        raise EvidenceMalformed(f"PCK extension {what} has the wrong length", field=what)
    return out


def _entries(tlv: der.Tlv, what: str) -> dict[bytes, der.Tlv]:
    """A SEQUENCE OF SEQUENCE { OBJECT IDENTIFIER, value } as a map by the OID's content octets
    (PCK profile 1.5)."""
    out: dict[bytes, der.Tlv] = {}
    for item in der.sequence(tlv, what):
        pair = der.sequence(item, what)
        if len(pair) != 2:
            raise der.DerError(f"{what} entry is not an (OID, value) pair")
        key = der.expect(pair[0], der.OID, what)
        if key in out:
            raise der.DerError(f"{what} entry {key.hex()} appears twice")
        out[key] = pair[1]
    return out


def parse_pck_extension(cert: x509.Certificate) -> PckInfo:
    """Parse the Intel SGX extension of a PCK certificate (strict DER, ``intel/der.py``).

    Raises:
        EvidenceMalformed (``evidence.malformed``): extension missing or not of the documented shape.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        top = der.read_tree(raw, der.EXTENSION_TAGS)  # the whole extension is DER, not only what we read
        if len(top) != 1:
            raise EvidenceMalformed("PCK SGX extension is not one SEQUENCE")
        entries = _entries(top[0], "SGX extension")
        tcb = _entries(entries[_OID_TCB], "SGX TCB")
        comps = tuple(der.integer(tcb[oid]) for oid in _COMP_OIDS)
        pce_svn = der.integer(tcb[_OID_PCESVN])
        info = PckInfo(
            ppid=_octets(entries[_OID_PPID], 16, "PPID"),
            cpu_svn=comps,
            pce_svn=pce_svn,
            pce_id=_octets(entries[_OID_PCEID], 2, "PCE-ID"),
            fmspc=_octets(entries[_OID_FMSPC], 6, "FMSPC"),
        )
    except EvidenceMalformed:
        raise
    except (x509.ExtensionNotFound, der.DerError, KeyError, ValueError) as exc:
        raise EvidenceMalformed("PCK certificate has no well-formed Intel SGX extension") from exc
    if not all(0 <= c < 256 for c in comps) or not 0 <= pce_svn < 65536:
        raise EvidenceMalformed("PCK certificate TCB SVNs are out of range")
    return info


@dataclass(frozen=True, slots=True)
class VerifiedPck:
    """A PCK chain from a quote's certification data, verified to a pinned root, with its extension."""

    chain: VerifiedChain
    info: PckInfo
    public_key: ec.EllipticCurvePublicKey
    sha256: str  # of the certification data as carried in the quote


_PCK_CACHE: LRU[VerifiedPck] = LRU(256)


def verified_pck(cert_data: bytes, pins: frozenset[str]) -> VerifiedPck:
    """Verify the PCK chain of certification data type 5 (PEM, leaf first), cached by its bytes.

    Raises:
        ChainInvalid, RootUntrusted (``evidence.*``); EvidenceMalformed for a bad SGX extension.
    """
    digest = hashlib.sha256(cert_data).digest()
    return _PCK_CACHE.get_or_compute((digest, pins), lambda: _verify_pck(cert_data, digest, pins))


def _verify_pck(cert_data: bytes, digest: bytes, pins: frozenset[str]) -> VerifiedPck:
    certs = load_pem_chain(cert_data, "PCK")
    # PCK profile 1.1: PCK leaf <- PCK Platform/Processor CA <- Intel SGX Root CA, nothing else.
    if len(certs) != 3:
        raise ChainInvalid("PCK chain must be leaf, PCK CA and root")
    chain = verify_chain(certs, pins, "PCK")
    key = chain.windows[0].key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ChainInvalid("PCK certificate key is not P-256")
    return VerifiedPck(chain, parse_pck_extension(chain.leaf), key, digest.hex())


def clear_cache() -> None:
    _PCK_CACHE.clear()
    _LINKS.clear()
    _FACTS.clear()
    _NAMES.clear()
