"""AWS Nitro root -> cabundle -> attestation certificate, checked and cached.

Steps (AWS attestation_process.md section 3.2.3 "Certificates validity"):

1. ``cabundle[0]`` is the root; it is trusted only if the SHA-256 of its DER is pinned
   (``roots.nitro``; AWS Nitro Enclaves Root-G1). A self-signed root in the bundle proves nothing.
2. Each next certificate (``cabundle[1:]`` then ``certificate``) is issued by the previous one:
   issuer name and ECDSA signature (cryptography ``verify_directly_issued_by``).
3. Every issuer is a CA (basicConstraints cA, keyCertSign); the attestation certificate is not.
4. Every certificate is inside its validity window at ``at``.

Signatures (steps 2-3) depend only on the bytes, so a verified chain is cached by the SHA-256 of its
certificates; the pin and the validity window are re-checked on every call. Only successes are cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ca_service.crypto.certs import is_ca
from ca_service.errors import CertificateExpired, ChainInvalid, EvidenceMalformed, RootUntrusted
from ca_service.evidence.trust import is_pinned

_CACHE_SIZE = 1024


@dataclass(frozen=True)
class VerifiedChain:
    """Certificates root first, leaf last, whose signatures and roles verified."""

    certificates: tuple[x509.Certificate, ...]
    fingerprints: tuple[str, ...]  # SHA-256 of DER, hex, same order

    @property
    def root(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[-1]


_LOCK = threading.Lock()
_CHAINS: OrderedDict[str, VerifiedChain] = OrderedDict()


def clear_caches() -> None:
    """Forget every verified chain (tests and benchmarks measure the cold path with it)."""
    with _LOCK:
        _CHAINS.clear()


def load_der(der: bytes, what: str) -> x509.Certificate:
    """Raises EvidenceMalformed (``evidence.malformed``) if ``der`` is not one X.509 certificate."""
    try:
        return x509.load_der_x509_certificate(der)
    except Exception as exc:  # pyca raises ValueError, InvalidVersion...: the wrapper's one family
        raise EvidenceMalformed(f"{what} is not a DER X.509 certificate") from exc


def _verify_links(certs: list[x509.Certificate]) -> None:
    for i in range(1, len(certs)):
        issuer, cert = certs[i - 1], certs[i]
        what = "attestation certificate" if i == len(certs) - 1 else f"cabundle[{i}]"
        if not is_ca(issuer):
            raise ChainInvalid(f"issuer of the {what} is not a CA certificate")
        if not isinstance(issuer.public_key(), ec.EllipticCurvePublicKey):
            raise ChainInvalid(f"issuer of the {what} has no EC key")
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise ChainInvalid(f"the {what} is not signed by the certificate before it") from exc
    if is_ca(certs[-1]):
        raise ChainInvalid("the attestation certificate is a CA certificate")


def verify_chain(leaf: x509.Certificate, cabundle: tuple[bytes, ...], pins: frozenset[str],
                 at: datetime) -> VerifiedChain:
    """Steps 1-4 above.

    Raises:
        EvidenceMalformed: a cabundle entry is not a certificate.
        RootUntrusted (``evidence.root_untrusted``): ``cabundle[0]`` is not pinned.
        ChainInvalid (``evidence.chain_invalid``): a signature, issuer name or CA role is wrong.
        CertificateExpired (``evidence.certificate_expired``): a certificate is outside its window at ``at``.
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf_der = leaf.public_bytes(Encoding.DER)
    ders = (*cabundle, leaf_der)
    fps = tuple(hashlib.sha256(d).hexdigest() for d in ders)
    key = "".join(fps)
    with _LOCK:
        chain = _CHAINS.get(key)
        if chain is not None:
            _CHAINS.move_to_end(key)
    if chain is None:
        certs = [load_der(d, f"cabundle[{i}]") for i, d in enumerate(cabundle)] + [leaf]
        # 1. The root is trusted by its pin only (checked again below, outside the cache).
        if not is_pinned(certs[0], pins):
            raise RootUntrusted(f"cabundle root SHA-256 {fps[0]} is not a pinned AWS Nitro root")
        _verify_links(certs)
        chain = VerifiedChain(tuple(certs), fps)
        with _LOCK:
            _CHAINS[key] = chain
            while len(_CHAINS) > _CACHE_SIZE:
                _CHAINS.popitem(last=False)
    if not is_pinned(chain.root, pins):
        raise RootUntrusted(f"cabundle root SHA-256 {fps[0]} is not a pinned AWS Nitro root")
    for i, cert in enumerate(chain.certificates):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            name = "attestation certificate" if i == len(chain.certificates) - 1 else f"cabundle[{i}]"
            raise CertificateExpired(
                f"{name} is valid {cert.not_valid_before_utc.isoformat()}..{cert.not_valid_after_utc.isoformat()}, "
                f"not at {at.isoformat()}"
            )
    return chain
