"""Certificate chains for the two NVIDIA trust domains, picked by content and cached.

- Device: NVIDIA Device Identity CA (pinned, ``roots.nvidia_device``) -> GH100 Identity ->
  Provisioner ICA -> GSP BROM -> GSP FMC "LF" (the attestation key that signs SPDM responses).
  Given as collateral (nvtrust ``gpuAkCertChain`` / ``hopperCertChain``, PEM, leaf first).
- RIM: NVIDIA CoRIM signing Root CA (pinned, ``roots.nvidia_rim``) -> Reference Value CA ->
  L3 -> "HCC RIM L4 Signer", carried in each RIM's ``ds:X509Data``.

Steps: find the certificate whose SHA-256 is pinned (a root in the input proves nothing by being
there); walk down, at each level taking the first certificate issued by the current one whose
signature verifies (cryptography ``verify_directly_issued_by``) and whose issuer is a CA with
keyCertSign; the last one is the leaf and must not be a CA. Signature work is cached by the SHA-256
of every input certificate; the pin and the validity window at ``at`` are checked on every call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from ca_service.crypto.certs import der_sha256, is_ca
from ca_service.errors import ChainInvalid, EvidenceError, RootUntrusted
from ca_service.evidence.trust import is_pinned

_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Chain:
    """Root first, leaf last."""

    certificates: tuple[x509.Certificate, ...]
    fingerprints: tuple[str, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[-1]


_LOCK = threading.Lock()
_CHAINS: OrderedDict[tuple[str, ...], Chain] = OrderedDict()


def clear_caches() -> None:
    with _LOCK:
        _CHAINS.clear()


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def links(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``cert`` names ``issuer`` as its issuer (and is not it) and its signature verifies with its key."""
    try:  # names are parsed lazily: a mangled one raises here
        if cert.issuer != issuer.subject or cert.subject == issuer.subject:
            return False
    except Exception:  # ValueError, KeyError (unknown string type): not a link
        return False
    return _issued_by(cert, issuer)


def _name(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except Exception:
        return "a certificate with an unparsable subject"


def _build(certs: Sequence[x509.Certificate], pins: frozenset[str], what: str) -> Chain:
    roots = [c for c in certs if is_pinned(c, pins)]
    if not roots:
        raise RootUntrusted(f"no certificate of the {what} chain is a pinned root")
    chain = [roots[0]]
    remaining = [c for c in certs if c is not roots[0]]
    while True:
        cur = chain[-1]
        child = next((c for c in remaining if links(c, cur)), None)
        if child is None:
            break
        if not is_ca(cur):
            raise ChainInvalid(f"{what}: {_name(cur)} issues certificates but is not a CA")
        chain.append(child)
        remaining = [c for c in remaining if c is not child]
    if len(chain) < 2 or is_ca(chain[-1]):
        raise ChainInvalid(f"{what}: no end-entity certificate chains to the pinned root")
    return Chain(tuple(chain), tuple(der_sha256(c) for c in chain))


def order_chain(certs: Sequence[x509.Certificate], pins: frozenset[str], what: str) -> Chain:
    """The chain from the pinned root to the end entity, every link verified, validity windows not
    checked (what a family's needs read: which certificates there are, not whether they hold now).

    Raises:
        RootUntrusted, ChainInvalid: as :func:`build_chain`.
    """
    return _build(certs, pins, what)


def build_chain(certs: Sequence[x509.Certificate], pins: frozenset[str], at: datetime, what: str,
                expired: type[EvidenceError]) -> Chain:
    """Build and check the chain, as of ``at``.

    Raises:
        RootUntrusted (``evidence.root_untrusted``): no input certificate is pinned.
        ChainInvalid (``evidence.chain_invalid``): nothing chains from the root to an end entity.
        ``expired``: a certificate of the chain is outside its validity window at ``at``.
    """
    key = tuple(der_sha256(c) for c in certs)
    with _LOCK:
        chain = _CHAINS.get(key)
        if chain is not None:
            _CHAINS.move_to_end(key)
    if chain is None:
        chain = _build(certs, pins, what)
        with _LOCK:
            _CHAINS[key] = chain
            while len(_CHAINS) > _CACHE_SIZE:
                _CHAINS.popitem(last=False)
    if not is_pinned(chain.certificates[0], pins):
        raise RootUntrusted(f"the {what} root is not pinned")
    for cert in chain.certificates:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise expired(
                f"{what}: {_name(cert)} is valid {cert.not_valid_before_utc.isoformat()}.."
                f"{cert.not_valid_after_utc.isoformat()}, not at {at.isoformat()}"
            )
    return chain
