"""Intel DCAP collateral: TCB Info, QE Identity, PCK CRL and Root CA CRL, verified once and cached.

Input is dcap-qvl's ``QuoteCollateralV3`` JSON (the shape of ``collateral.json`` in the shared
vectors): TCB Info and QE Identity as the exact signed JSON text, their raw r||s signatures and
issuer chains (PEM), the two CRLs as hex DER, and the PCK CRL issuer chain.

Intel DCAP QVL collateral steps named below:
  (C1) Root CA CRL: signed by the pinned Intel SGX Root CA.
  (C2) TCB Info: issuer chain to the pinned root, ECDSA P-256 signature over the exact ``tcbInfo`` bytes.
  (C3) QE Identity: likewise over the exact ``enclaveIdentity`` bytes.
  (C4) PCK CRL: issuer chain to the pinned root, CRL signature by its issuer.
  (C5) revocation of every signing certificate against the CRL of its issuer.
  (C6) at verification time: issueDate <= at <= nextUpdate for TCB Info, QE Identity and both CRLs,
       and every certificate's validity window (not cached).

The two CRLs are revocation sources (docs/revocation.md): one that is absent, unparseable or not
signed by its pinned issuer does not make the document unusable; its state is kept
(:class:`CrlSource`) and :meth:`VerifiedCollateral.revocation` reports it with the window at ``at``,
for ``ca_service.evidence.verify`` to refuse (``revocation.intel_pck_crl_<state>``,
``revocation.intel_root_ca_crl_<state>``) unless the policy accepts it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service import boundedjson
from ca_service.errors import CollateralExpired, CollateralInvalid, CollateralMissing, EvidenceError
from ca_service.evidence.base import Check
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.intel.cache import LRU
from ca_service.evidence.intel.der import crl_issuer, signed_part
from ca_service.evidence.intel.pck import (
    Facts,
    VerifiedChain,
    ecdsa_valid,
    facts,
    load_pem_chain,
    subject_text,
    verify_chain,
)
from ca_service.evidence.intel.tcb import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info

_V3_FIELDS = (
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_CRL_FIELDS = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl")  # revocation: judged, not required
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
PCK_CRL, ROOT_CA_CRL = "intel_pck_crl", "intel_root_ca_crl"


@dataclass(frozen=True, slots=True)
class Crl:
    issuer: bytes  # DER of the issuer Name
    revoked: frozenset[int]
    this_update: datetime
    next_update: datetime | None


@dataclass(frozen=True, slots=True)
class CrlSource:
    """One of the two CRLs: ``crl`` when it parsed and its signature verified (``state`` ``good`` then;
    its window is judged at ``at``), else None and ``state`` says why (missing, invalid, bad_signature)."""

    item: str
    state: str
    detail: str
    crl: Crl | None = None


@dataclass(frozen=True, slots=True)
class VerifiedCollateral:
    """Everything in one QuoteCollateralV3 document whose signatures verified (C1-C5)."""

    tcb_info: TcbInfo
    qe_identity: QeIdentity
    chains: tuple[VerifiedChain, ...]
    crls: tuple[Crl, ...]  # the usable ones
    revoked_by_issuer: dict[bytes, frozenset[int]]
    sha256: dict[str, str]
    sources: tuple[CrlSource, ...] = ()
    root_name: bytes = b""  # DER of the pinned root's Name: what the Root CA CRL covers

    def revocation(self, pck_chain: VerifiedChain, at: datetime) -> tuple[dict[str, str], list[Check]]:
        """(C5, C6) The state of each CRL for the PCK chain at ``at`` and one check per CRL.

        A CRL is ``good`` when it verified, ``at`` is inside its window, and it covers every certificate
        of the PCK chain whose issuer it is (the PCK CRL must come from the CA that issued the PCK
        certificate). A listed PCK chain certificate is refused here.

        Raises:
            CertificateRevoked (``evidence.certificate_revoked``).
        """
        states: dict[str, str] = {}
        details: dict[str, str] = {}
        for src in self.sources:
            states[src.item], details[src.item] = src.state, src.detail
            crl = src.crl
            if crl is None or src.state != "good":
                continue
            if at < crl.this_update or crl.next_update is None or at > crl.next_update:
                states[src.item] = "expired"
                details[src.item] = (f"valid {crl.this_update.isoformat()} .. "
                                     f"{crl.next_update.isoformat() if crl.next_update else None}, "
                                     f"not at {at.isoformat()}")
        for w in pck_chain.check_revocation(self.revoked_by_issuer):
            item = ROOT_CA_CRL if w.issuer == self.root_name else PCK_CRL
            if states.get(item) in ("good", "expired"):
                states[item] = "missing"
                details[item] = f"no CRL from the issuer of {subject_text(w.cert)}"
        checks = []
        for item in (PCK_CRL, ROOT_CA_CRL):
            state = states.setdefault(item, "missing")
            detail = details.get(item, "not in the collateral")
            what = "PCK CRL" if item == PCK_CRL else "Root CA CRL"
            checks.append(Check(f"revocation.{item}", True, f"{what}: {detail}") if state == "good" else
                          Check.fail(f"revocation.{item}", f"{what}: {detail}", f"revocation.{item}_{state}"))
        return states, checks

    def check_time(self, at: datetime) -> None:
        """(C6) Raises CollateralExpired or CertificateExpired when ``at`` is outside a window."""
        for name, start, end in (
            ("TCB Info", self.tcb_info.issue_date, self.tcb_info.next_update),
            ("QE Identity", self.qe_identity.issue_date, self.qe_identity.next_update),
        ):
            if at < start or at > end:
                raise CollateralExpired(f"{name} is not valid at {at.isoformat()}", item=name)
        for chain in self.chains:
            chain.check_time(at)


_COLLATERAL_CACHE: LRU[VerifiedCollateral] = LRU(64)
_CHAIN_CACHE: LRU[VerifiedChain] = LRU(64)
_CRL_CACHE: LRU[Crl] = LRU(64)


def clear_caches() -> None:
    for cache in (_COLLATERAL_CACHE, _CHAIN_CACHE, _CRL_CACHE):
        cache.clear()


def find_v3_document(collateral: Collateral) -> tuple[bytes, object | None]:
    """The QuoteCollateralV3 JSON among the collateral items, and its value as the items were
    parsed (None if they were not).

    Raises:
        CollateralMissing (``evidence.collateral_missing``): none given.
        CollateralInvalid (``evidence.collateral_invalid``): more than one.
    """
    docs = collateral.json_documents
    values = collateral.json_values if len(collateral.json_values) == len(docs) else (None,) * len(docs)
    found = [(doc, value) for doc, value in zip(docs, values, strict=True)
             if b'"tcb_info"' in doc and b'"qe_identity"' in doc]
    if not found:
        raise CollateralMissing("Intel collateral (QuoteCollateralV3 JSON) is missing")
    if len(found) > 1:
        raise CollateralInvalid("more than one Intel collateral document was given")
    return found[0]


def verified_collateral(doc: bytes, pins: frozenset[str], parsed: object | None = None) -> VerifiedCollateral:
    """Verify (C1-C5) a QuoteCollateralV3 document, or return the cached result for the same bytes.
    ``parsed``: ``doc`` as ``boundedjson.loads`` read it already, if it did (only read here).

    Raises:
        CollateralInvalid, RootUntrusted, ChainInvalid, CertificateRevoked (``evidence.*``).
    """
    key = (hashlib.sha256(doc).digest(), pins)
    return _COLLATERAL_CACHE.get_or_compute(key, lambda: _verify_document(doc, pins, parsed))


def _verify_document(doc: bytes, pins: frozenset[str], parsed: object | None = None) -> VerifiedCollateral:
    obj = parsed
    if obj is None:
        try:
            obj = boundedjson.loads(doc)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralInvalid("Intel collateral is not JSON") from exc
    if not isinstance(obj, dict) or not all(isinstance(obj.get(f), str) for f in _V3_FIELDS):
        raise CollateralInvalid("Intel collateral is not a QuoteCollateralV3 document")
    if not all(obj.get(f) is None or isinstance(obj.get(f), str) for f in _CRL_FIELDS):
        raise CollateralInvalid("Intel collateral is not a QuoteCollateralV3 document")
    fields: dict[str, str] = {f: obj[f] for f in _V3_FIELDS}
    tcb_chain = _chain(fields["tcb_info_issuer_chain"], pins, "TCB Info")
    qe_chain = _chain(fields["qe_identity_issuer_chain"], pins, "QE Identity")
    # (C1) Root CA CRL, signed by the pinned root (the root of the TCB signing chain).
    root_src = crl_source(obj.get("root_ca_crl"), tcb_chain.root, ROOT_CA_CRL, "Root CA CRL")
    # (C4) PCK CRL, signed by the first certificate of its issuer chain, which chains to the pinned root.
    crl_chain: VerifiedChain | None = None
    if not obj.get("pck_crl"):
        pck_src = CrlSource(PCK_CRL, "missing", "not in the collateral")
    elif not obj.get("pck_crl_issuer_chain"):
        pck_src = CrlSource(PCK_CRL, "bad_signature", "no issuer chain: its signer cannot be verified")
    else:
        try:
            crl_chain = _chain(obj["pck_crl_issuer_chain"], pins, "PCK CRL")
        except EvidenceError as exc:
            pck_src = CrlSource(PCK_CRL, "bad_signature", f"its issuer chain does not verify ({exc.code})")
        else:
            pck_src = crl_source(obj["pck_crl"], crl_chain.leaf, PCK_CRL, "PCK CRL")
    # (C2) TCB Info and (C3) QE Identity: signatures over the exact signed bytes, checked before parsing.
    tcb_bytes = fields["tcb_info"].encode()
    qe_bytes = fields["qe_identity"].encode()
    verify_raw_signature(tcb_chain.leaf, fields["tcb_info_signature"], tcb_bytes, "TCB Info")
    verify_raw_signature(qe_chain.leaf, fields["qe_identity_signature"], qe_bytes, "QE Identity")
    tcb_info = parse_tcb_info(_json(tcb_bytes, "TCB Info"))
    qe_identity = parse_qe_identity(_json(qe_bytes, "QE Identity"))
    usable = [src.crl for src in (root_src, pck_src) if src.crl is not None]
    revoked = {crl.issuer: crl.revoked for crl in usable}
    chains = tuple(c for c in (tcb_chain, qe_chain, crl_chain) if c is not None)
    # (C5) the signing certificates themselves must not be revoked; one no usable CRL covers leaves the
    # Root CA CRL's state as it is (unusable already: they are all issued by the root).
    for chain in chains:
        chain.check_revocation(revoked)
    digests = {
        "intel.collateral": hashlib.sha256(doc).hexdigest(),
        "intel.tcb_info": hashlib.sha256(tcb_bytes).hexdigest(),
        "intel.qe_identity": hashlib.sha256(qe_bytes).hexdigest(),
    }
    for name, field in (("intel.pck_crl", "pck_crl"), ("intel.root_ca_crl", "root_ca_crl")):
        value = obj.get(field)
        if isinstance(value, str) and value:
            digests[name] = hashlib.sha256(value.encode()).hexdigest() if not _is_hex(value) else (
                hashlib.sha256(bytes.fromhex(value)).hexdigest())
    return VerifiedCollateral(tcb_info, qe_identity, chains, tuple(usable), revoked, digests,
                              (pck_src, root_src), tcb_chain.windows[-1].subject)


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def crl_source(value: object, issuer: x509.Certificate, item: str, what: str) -> CrlSource:
    """The state of one CRL field (hex DER) signed by ``issuer``: never raises (module docstring)."""
    if not isinstance(value, str) or not value:
        return CrlSource(item, "missing", "not in the collateral")
    try:
        signer = facts(issuer)
        raw = bytes.fromhex(value)
        crl = x509.load_der_x509_crl(raw)
        parsed, signed = _crl(crl, raw, signer)
    except Exception:  # noqa: BLE001 - the pyca boundary: not hex, not DER, a mangled field: unparseable
        return CrlSource(item, "invalid", f"{what} cannot be parsed")
    if not signed:
        return CrlSource(item, "bad_signature", f"{what} is not signed by {subject_text(issuer)}")
    if parsed.next_update is None:
        return CrlSource(item, "invalid", f"{what} has no nextUpdate")
    return CrlSource(item, "good", f"signed by {subject_text(issuer)}", parsed)


def _crl(crl: x509.CertificateRevocationList, raw: bytes, signer: Facts) -> tuple[Crl, bool]:
    """The CRL as read from ``raw`` (the bytes pyca parsed), and whether ``signer`` issued it: its
    issuer Name as encoded is the signer's subject, and its ECDSA signature covers the tbsCertList
    as encoded. pyca's ``is_signature_valid`` encodes the list again first (~200 µs of ~300 µs for a
    PCK CRL here).

    Raises:
        ValueError: a field does not parse (``der.DerError`` is one).
    """
    tbs = signed_part(raw)
    issuer = crl_issuer(tbs)
    parsed = Crl(issuer=issuer, revoked=frozenset(r.serial_number for r in crl),
                 this_update=crl.last_update_utc, next_update=crl.next_update_utc)
    signed = issuer == signer.subject and ecdsa_valid(signer.key, crl.signature, tbs, crl.signature_algorithm_oid)
    return parsed, signed


def _unhex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise CollateralInvalid(f"collateral field {what} is not hex", field=what) from exc


def _json(data: bytes, what: str) -> object:
    try:
        return boundedjson.loads(data)
    except ValueError as exc:
        raise CollateralInvalid(f"{what} is not JSON") from exc


def _chain(pem: str, pins: frozenset[str], what: str) -> VerifiedChain:
    data = pem.encode()
    key = (hashlib.sha256(data).digest(), pins)

    def compute() -> VerifiedChain:
        try:
            return verify_chain(load_pem_chain(data, what), pins, what)
        except EvidenceError as exc:
            # A broken collateral chain is broken collateral; keep the specific leaf for roots.
            if exc.code in ("evidence.chain_invalid",):
                raise CollateralInvalid(f"{what} issuer chain does not verify") from exc
            raise

    return _CHAIN_CACHE.get_or_compute(key, compute)


def load_verified_crl(der: bytes, issuer: x509.Certificate, what: str) -> Crl:
    key = (hashlib.sha256(der).digest(), hashlib.sha256(issuer.tbs_certificate_bytes).digest())

    def compute() -> Crl:
        try:
            signer = facts(issuer)
            crl = x509.load_der_x509_crl(der)
            parsed, ok = _crl(crl, der, signer)
        except Exception as exc:  # noqa: BLE001 - the pyca boundary: any parse failure is bad collateral
            raise CollateralInvalid(f"{what} cannot be parsed") from exc
        if not ok:
            raise CollateralInvalid(f"{what} signature or issuer does not verify", item=what)
        return parsed

    return _CRL_CACHE.get_or_compute(key, compute)


def verify_raw_signature(cert: x509.Certificate, sig_hex: str, data: bytes, what: str) -> None:
    raw = _unhex(sig_hex, f"{what} signature")
    key = facts(cert).key
    if len(raw) != 64 or not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollateralInvalid(f"{what} signature is not a raw P-256 r||s")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise CollateralInvalid(f"{what} signature does not verify", item=what) from exc
