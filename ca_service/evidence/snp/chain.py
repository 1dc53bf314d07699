"""ARK -> ASK/ASVK -> VCEK/VLEK: pick the certificates by content, verify, and cache the result.

Steps (AMD 57230 section 2 "Certificate chain"; every signature is RSASSA-PSS, SHA-384, MGF1
SHA-384, salt 48 bytes):

1. The ARK is self-issued and its SHA-256 is pinned in ``roots.amd``; a root carried in the
   collateral is trusted only through the pin. Then its self-signature is checked.
2. The ASK (VCEK chains) or ASVK (VLEK chains) is a CA certificate signed by the ARK.
3. The VCEK/VLEK is signed by the ASK/ASVK and holds a P-384 key.
4. Every certificate is inside its validity window at ``at``.
5. The product line named by the ARK, the intermediate and the VCEK/VLEK productName agree.

A verified chain is immutable (a VCEK is fixed per chip and TCB), so the signature checks are
cached per (VCEK/VLEK, ASK/ASVK, ARK) digests; what depends on the call (pins, ``at``, CRL) is
re-checked every time. Only successes are cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.crypto.certs import der_sha256, is_ca
from ca_service.errors import (
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    CollateralMissing,
    RootUntrusted,
    SnpProductMismatch,
)
from ca_service.evidence.snp.certs import (
    _VEK_CACHE,
    PRODUCT_LINES,
    ProductLine,
    VekInfo,
    common_name,
    line_from_cn,
    parse_vek,
    vek_key_type,
)
from ca_service.evidence.snp.parse import SigningKey
from ca_service.evidence.trust import is_pinned

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_CACHE_SIZE = 1024


@dataclass(frozen=True)
class VerifiedChain:
    """A chain whose signatures verified: everything needed to check a report against it."""

    line: ProductLine
    vek: VekInfo
    vek_key: ec.EllipticCurvePublicKey
    ark: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    fingerprints: tuple[str, str, str]  # vek, intermediate, ark (SHA-256 of DER, hex)

    def certificates(self) -> tuple[tuple[str, x509.Certificate], ...]:
        inter = "asvk" if self.vek.key_type is SigningKey.VLEK else "ask"
        return ((self.vek.key_type.name.lower(), self.leaf), (inter, self.intermediate), ("ark", self.ark))


class _LRU:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> object | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: object) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_CHAINS = _LRU(_CACHE_SIZE)
_CRLS = _LRU(_CACHE_SIZE)


def clear_caches() -> None:
    """Forget every verified chain, CRL and parsed VCEK/VLEK (tests and benchmarks measure the
    cold path with it)."""
    _CHAINS.clear()
    _CRLS.clear()
    _VEK_CACHE.clear()


def verify_pss(issuer: x509.Certificate, cert: x509.Certificate, what: str) -> None:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainInvalid(f"{what}: issuer key is not RSA")
    if cert.signature_algorithm_oid != x509.oid.SignatureAlgorithmOID.RSASSA_PSS or not isinstance(
        cert.signature_hash_algorithm, hashes.SHA384
    ):
        raise ChainInvalid(f"{what}: signature is not RSASSA-PSS with SHA-384")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, _PSS, hashes.SHA384())
    except (InvalidSignature, UnsupportedAlgorithm) as exc:
        raise ChainInvalid(f"{what}: signature does not verify") from exc


def _may_sign_crls(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return False


def select_vek_candidates(certs: Iterable[x509.Certificate], key: SigningKey) -> list[x509.Certificate]:
    """Every distinct VCEK (or VLEK) in the collateral, in a stable order."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        if vek_key_type(cert) is not key:
            continue
        der = cert.public_bytes(Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return out


def _find_issuer(
    certs: Iterable[x509.Certificate], cert: x509.Certificate, want_self_issued: bool
) -> x509.Certificate | None:
    for cand in certs:
        if cand.subject != cert.issuer:
            continue
        if want_self_issued != (cand.subject == cand.issuer):
            continue
        return cand
    return None


def _other_lines(certs: Iterable[x509.Certificate], prefix: str) -> list[str]:
    names = {common_name(c.subject) for c in certs}
    return sorted(n for n in names if line_from_cn(n, prefix) is not None)


def build_chain(
    leaf: x509.Certificate, certs: tuple[x509.Certificate, ...], pins: frozenset[str]
) -> VerifiedChain:
    """Find and verify the ASK/ASVK and ARK above ``leaf`` (a VCEK/VLEK), cached.

    Does not check validity windows: see :func:`check_validity`.

    Raises:
        CollateralMissing: no intermediate or ARK for this leaf in the collateral.
        SnpProductMismatch (``evidence.snp.product_mismatch``): the collateral's ASK/ARK are for
            another product line than the VCEK/VLEK.
        RootUntrusted: the ARK is not pinned.
        ChainInvalid: a signature, role or key type is wrong.
        CollateralInvalid: the VCEK/VLEK extensions are malformed.
    """
    vek = parse_vek(leaf)
    line = PRODUCT_LINES.get(vek.product_line_name)
    if line is None:
        raise SnpProductMismatch(f"VCEK/VLEK product {vek.product_name!r} is not a known product line")

    want_inter = line.intermediate_cn(vek.key_type)
    if common_name(leaf.issuer) != want_inter:
        raise SnpProductMismatch(
            f"{vek.key_type.name} for {line.name} is issued by "
            f"{common_name(leaf.issuer)!r}, not {want_inter!r}"
        )
    inter = _find_issuer(certs, leaf, want_self_issued=False)
    if inter is None:
        others = _other_lines(certs, "SEV-VLEK-" if vek.key_type is SigningKey.VLEK else "SEV-")
        if others:
            raise SnpProductMismatch(
                f"{vek.key_type.name} needs {want_inter}; collateral has {', '.join(others)}"
            )
        raise CollateralMissing(f"no {want_inter} certificate in the collateral")
    ark = _find_issuer(certs, inter, want_self_issued=True)
    if ark is None:
        others = _other_lines(certs, "ARK-")
        if others:
            raise SnpProductMismatch(f"{want_inter} needs {line.ark_cn}; collateral has {', '.join(others)}")
        raise CollateralMissing(f"no {line.ark_cn} certificate in the collateral")
    if common_name(ark.subject) != line.ark_cn:
        raise SnpProductMismatch(f"ARK {common_name(ark.subject)!r} is not {line.ark_cn!r}")

    # Step 1 first: an unpinned root is refused before any work is spent on it.
    if not is_pinned(ark, pins):
        raise RootUntrusted(f"{common_name(ark.subject)} is not a pinned AMD root")

    fps = (der_sha256(leaf), der_sha256(inter), der_sha256(ark))
    cached = _CHAINS.get(fps)
    if isinstance(cached, VerifiedChain):
        return cached

    verify_pss(ark, ark, "ARK self-signature")
    if not is_ca(ark):
        raise ChainInvalid("ARK is not a CA certificate with keyCertSign")
    verify_pss(ark, inter, f"{want_inter} signed by {line.ark_cn}")
    if not is_ca(inter):
        raise ChainInvalid(f"{want_inter} is not a CA certificate with keyCertSign")
    verify_pss(inter, leaf, f"{vek.key_type.name} signed by {want_inter}")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # vek_key_type checked; keeps mypy exact
        raise ChainInvalid("VCEK/VLEK key is not EC P-384")

    chain = VerifiedChain(line, vek, key, ark, inter, leaf, fps)
    _CHAINS.put(fps, chain)
    return chain


def check_validity(chain: VerifiedChain, at: datetime) -> None:
    """Raises CertificateExpired if any certificate of the chain is outside its window at ``at``."""
    for role, cert in chain.certificates():
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise CertificateExpired(
                f"{role.upper()} valid {cert.not_valid_before_utc.isoformat()} .. "
                f"{cert.not_valid_after_utc.isoformat()}, not at {at.isoformat()}"
            )


@dataclass(frozen=True)
class CrlResult:
    """What the ARK's CRL says about this chain at ``at``.

    ``state`` is ``good`` (a CRL signed by the chain's ARK is valid at ``at`` and does not list the
    ASK/ASVK) or why revocation is not established: ``missing``, ``expired``, ``invalid``,
    ``bad_signature`` (the refusal code ``revocation.amd_crl_<state>``; a policy rule may accept it).
    """

    state: str
    detail: str
    this_update: datetime | None = None
    next_update: datetime | None = None
    sha256: str | None = None

    @property
    def checked(self) -> bool:
        return self.state == "good"

    def to_json(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "state": self.state,
            "this_update": self.this_update.isoformat() if self.this_update else None,
            "next_update": self.next_update.isoformat() if self.next_update else None,
            "sha256": self.sha256,
            "revoked": False if self.checked else None,
        }


_ARK_NAMES = frozenset(line.ark_cn for line in PRODUCT_LINES.values())


def _verify_crl_signature(chain: VerifiedChain, crl: x509.CertificateRevocationList, digest: str) -> str | None:
    """None when ``crl`` is signed by the chain's ARK (RSASSA-PSS SHA-384, cached); else why not."""
    key = (digest, chain.fingerprints[2])
    if _CRLS.get(key) is not None:
        return None
    if crl.signature_algorithm_oid != x509.oid.SignatureAlgorithmOID.RSASSA_PSS or not isinstance(
        crl.signature_hash_algorithm, hashes.SHA384
    ):
        return "the CRL is not signed with RSASSA-PSS/SHA-384"
    ark_key = chain.ark.public_key()
    if not isinstance(ark_key, rsa.RSAPublicKey):
        return "the ARK key is not RSA"
    try:
        ark_key.verify(crl.signature, crl.tbs_certlist_bytes, _PSS, hashes.SHA384())
    except InvalidSignature:
        return f"the CRL signature by {chain.line.ark_cn} does not verify"
    _CRLS.put(key, True)
    return None


def check_crls(
    chain: VerifiedChain,
    crls: Iterable[x509.CertificateRevocationList],
    at: datetime,
    unparsed: int = 0,
) -> CrlResult:
    """Revocation of this chain by the CRL its ARK signs (AMD KDS ``/vcek|vlek/v1/{line}/crl``).

    The ARK revokes the ASK/ASVK it issued; VCEKs are not revoked one by one (they are superseded by
    TCB), so the ASK/ASVK serial is the one looked up. Every CRL in the collateral is accounted for:
    one naming this chain's ARK is verified (signature by the pinned ARK, nextUpdate present); one
    naming another product line's ARK is left aside; any other CRL, or ``unparsed`` items that looked
    like CRLs but could not be parsed, make revocation unusable rather than being ignored.

    Returns a :class:`CrlResult` whose state says whether revocation was established; the caller
    (``ca_service.evidence.verify``) refuses a state other than ``good`` unless a policy rule accepts it.

    Raises:
        CertificateRevoked (``evidence.certificate_revoked``): a verified CRL lists the ASK/ASVK
            (revoked before ``at``), even a CRL past its nextUpdate.
    """
    ark_cn = chain.line.ark_cn
    if unparsed:
        return CrlResult("invalid", f"{unparsed} CRL item(s) in the collateral cannot be parsed")
    crls = list(crls)
    try:
        return _check_crls(chain, crls, at)
    except CertificateRevoked:
        raise
    except Exception:  # noqa: BLE001 - pyca parses CRLs lazily: a mangled field surfaces on access, any type
        return CrlResult("invalid", f"a CRL in the collateral for {ark_cn} cannot be parsed")


def _check_crls(chain: VerifiedChain, crls: list[x509.CertificateRevocationList], at: datetime) -> CrlResult:
    import hashlib

    ark_cn = chain.line.ark_cn
    ours: list[tuple[x509.CertificateRevocationList, str]] = []
    for crl in crls:
        issuer = crl.issuer
        if issuer == chain.ark.subject:
            ours.append((crl, hashlib.sha256(crl.public_bytes(Encoding.DER)).hexdigest()))
            continue
        name = common_name(issuer)
        if name in _ARK_NAMES and name != ark_cn:
            continue  # another product line's CRL, given alongside: not about this chain
        return CrlResult("bad_signature", f"a CRL in the collateral is issued by {issuer.rfc4514_string()!r}, "
                                          f"not by {ark_cn}")
    if not ours:
        return CrlResult("missing", f"no CRL issued by {ark_cn} in the collateral")
    if not _may_sign_crls(chain.ark):
        return CrlResult("bad_signature", f"{ark_cn} key usage does not include cRLSign")
    for crl, digest in ours:
        why = _verify_crl_signature(chain, crl, digest)
        if why is not None:
            return CrlResult("bad_signature", why, sha256=digest)
        if crl.next_update_utc is None:
            return CrlResult("invalid", "the AMD CRL has no nextUpdate", sha256=digest)
    inter = chain.intermediate
    for crl, _ in ours:  # listed in any verified CRL is revoked, however old the CRL
        entry = crl.get_revoked_certificate_by_serial_number(inter.serial_number)
        if entry is not None and entry.revocation_date_utc <= at:
            raise CertificateRevoked(
                f"{common_name(inter.subject)} serial {inter.serial_number:#x} is revoked by {ark_cn}"
            )
    # The newest CRL (latest thisUpdate) decides whether revocation is current at `at`.
    crl, digest = max(ours, key=lambda pair: pair[0].last_update_utc)
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    if next_update is None or not this_update <= at <= next_update:
        return CrlResult(
            "expired",
            f"the CRL by {ark_cn} is valid {this_update.isoformat()} .. "
            f"{next_update.isoformat() if next_update else None}, not at {at.isoformat()}",
            this_update, next_update, digest,
        )
    return CrlResult(
        "good",
        f"signed by {ark_cn}, valid at {at.isoformat()}, {common_name(inter.subject)} not revoked",
        this_update, next_update, digest,
    )
