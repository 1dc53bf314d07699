"""Flow 1: evidence + CSR in, certificate out. Owns its transactions.

Order (DESIGN.md flow 1): parse the CSR, read the challenge and the active policy (one read, or
none on PostgreSQL: docs/adr/0007-challenge-nonce-derived-from-its-id.md),
verify every evidence item, check each binding, appraise against the active policy version, apply
the policy's certificate rules, then in ONE transaction use the challenge up, append the log leaf,
sign, and insert the certificate with its appraisal and evidence digests (a refused request uses
its challenge up in a short transaction of its own; docs/adr/0006-challenge-used-in-the-issuance-transaction.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca_service import evidence as evidence_mod
from ca_service.ca.ear import build_ear
from ca_service.ca.lifetime import cap_lifetime
from ca_service.ca.profile import check_request, leaf_not_after, prepare_end_entity
from ca_service.crypto.keys import KEY_TYPES, ParsedCSR, parse_csr
from ca_service.db.models import Certificate
from ca_service.errors import (
    AppraisalFailed,
    CAServiceError,
    InsecureEvidenceRefused,
    NotFound,
    PolicyChanging,
    PolicyError,
    evidence_error_for,
)
from ca_service.evidence.base import VerifiedEvidence
from ca_service.evidence.binding import check_binding
from ca_service.evidence.revocation import STRICT, RevocationRule
from ca_service.evidence.trust import TrustRoots
from ca_service.policy.appraise import Appraisal, appraise
from ca_service.policy.model import Policy, check_applicable
from ca_service.services import collateral as collateral_service
from ca_service.services import group_commit, loaders, policies
from ca_service.services.challenges import (
    Expect,
    PolicyMoved,
    derived_nonce,
    has_derived_nonce,
    read_challenge,
    use_up,
    valid_challenge_id,
)
from ca_service.services.container import Services
from ca_service.services.roots import trust_roots
from ca_service.tlog import leaves as tlog_leaves


@dataclass(frozen=True)
class EvidenceItem:
    kind: str
    data: bytes
    collateral: tuple[bytes, ...] = ()
    event_log: bytes | None = None  # docs/event-log.md: replayed against the verified RTMRs
    ima_log: bytes | None = None


@dataclass(frozen=True)
class CertificateRequest:
    challenge_id: str
    csr_pem: str
    policy: str
    evidence: tuple[EvidenceItem, ...]
    lifetime: timedelta | None = None
    # a loader's request may name the CVM certificate it links to (services/loaders.py)
    cvm_serial: str | None = None


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    appraisal: Appraisal
    ear: dict[str, Any]
    policy: policies.PolicyRef
    log_index: int
    collateral: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def chain_pem(self) -> str:
        # the issuing CA's PEM is the same in every answer: encoded once per process
        leaf, *cas = self.chain
        return leaf.public_bytes(serialization.Encoding.PEM).decode() + "".join(_ca_pem(c) for c in cas)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "certificate_chain": self.chain_pem(),
            "appraisal": self.appraisal.to_json() | {"collateral": self.collateral},
            "ear": self.ear,
            "policy": {"name": self.policy.policy.name, "version": self.policy.version,
                       "digest": self.policy.policy.digest, "id": self.policy.id},
            "log_index": self.log_index,
        }


@lru_cache(maxsize=8)
def _ca_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Verified:
    """Verified evidence items, in request order, and per evidence type the collateral each was judged by."""

    evidence: list[VerifiedEvidence]
    collateral: dict[str, collateral_service.Resolved]

    def collateral_json(self) -> dict[str, list[dict[str, Any]]]:
        return {kind: r.to_json() for kind, r in self.collateral.items()}


def verify_one(svc: Services, item: EvidenceItem, at: datetime, roots: TrustRoots,
               rule: RevocationRule = STRICT) -> tuple[VerifiedEvidence, collateral_service.Resolved]:
    """Verify one item as of ``at`` by the CA's collateral (docs/adr/0005-the-cas-collateral-decides.md):
    for TDX/SGX/SNP the request's collateral only fills what the CA lacks. Revocation is judged under the
    policy's ``rule`` (docs/revocation.md): refused with ``revocation.<item>_<state>`` unless it accepts."""
    if item.kind == "sim" and not svc.settings.insecure:
        raise InsecureEvidenceRefused("sim evidence is refused in the production profile")
    if item.kind in collateral_service.SUPPLIED_KINDS or item.collateral:
        resolved = collateral_service.resolve_collateral(svc, item.kind, item.data, at, offered=item.collateral,
                                                         roots=roots)
    else:
        resolved = collateral_service.Resolved((), ())
    return evidence_mod.verify(item.kind, item.data, collateral=resolved.items, at=at, roots=roots,
                               event_log=item.event_log, ima_log=item.ima_log, **verify_kwargs(rule)), resolved


def refuse_unchecked_revocation(policy: Policy, verified: list[VerifiedEvidence]) -> None:
    """Revocation is checked, or the refusal says why not (issue 11 section 2): every revocation
    source a verifier could not use (missing, expired, unparseable, wrongly signed) is a refusal
    naming the item, unless the policy's rule accepted it at verification (``revocation.allow_unchecked``,
    or an expired source within the grace ``collateral.max_age_past_next_update``: it is then in the
    item's ``warnings``, and the EAR carries it). Catches what a verifier leaves skipped rather than
    failed (a GPU without OCSP responses).

    Raises:
        RevocationUnchecked leaves (``revocation.<item>_<state>``).
    """
    if policy.revocation_rule.allow_unchecked:
        return
    for ve in verified:
        for code in ve.unchecked_revocation:
            if code in ve.warnings:  # accepted by this policy's grace when verified
                continue
            raise evidence_error_for(code)(
                f"{ve.kind}: {code}: revocation was not checked; a policy accepts this only with "
                "revocation: {allow_unchecked: true}", evidence_type=ve.kind)


def verify_kwargs(rule: RevocationRule) -> dict[str, Any]:
    """``ca_service.evidence.verify`` keyword arguments for a policy's revocation rule."""
    return {"allow_unchecked_revocation": rule.allow_unchecked, "revocation_grace": rule.grace}


def verify_all(svc: Services, items: tuple[EvidenceItem, ...], at: datetime,
               rule: RevocationRule = STRICT) -> Verified:
    roots = trust_roots(svc)
    verified, used = [], {}
    for item in items:
        ve, resolved = verify_one(svc, item, at, roots, rule)
        verified.append(ve)
        used[item.kind] = resolved
    return Verified(verified, used)


def verify_items(svc: Services, items: tuple[EvidenceItem, ...], at: datetime) -> list[VerifiedEvidence]:
    return verify_all(svc, items, at).evidence


def _collateral_blobs(item: EvidenceItem) -> list[tuple[str, bytes]]:
    """Each collateral item as given, plus every certificate and CRL in it as DER, so a policy dry
    run can find them again by the digests the verifier recorded in the EAR."""
    from ca_service.evidence.collateral_items import load_collateral

    out = [("collateral", raw) for raw in item.collateral]
    if item.collateral:
        coll = load_collateral(item.collateral, keep_unparsed_crls=True)
        out += [("collateral", c.public_bytes(serialization.Encoding.DER)) for c in coll.certificates]
        out += [("collateral", c.public_bytes(serialization.Encoding.DER)) for c in coll.crls]
    return out


def _evidence_rows(items: tuple[EvidenceItem, ...], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Content-addressed evidence and collateral rows (inserted ON CONFLICT DO NOTHING with the
    certificate), and the certificate's references to its evidence."""
    rows: dict[str, dict[str, Any]] = {}
    out = []
    for item in items:
        logs = [(k, v) for k, v in (("event_log", item.event_log), ("ima_log", item.ima_log)) if v is not None]
        for kind, data in [(item.kind, item.data), *_collateral_blobs(item), *logs]:
            d = hashlib.sha256(data).hexdigest()
            rows.setdefault(d, {"sha256": d, "kind": kind, "data": data, "created_at": now})
        record = {"type": item.kind, "sha256": hashlib.sha256(item.data).hexdigest()}
        # the logs are stored too, so a re-appraisal or dry run replays them again
        record.update({f"{k}_sha256": hashlib.sha256(v).hexdigest() for k, v in logs})
        out.append(record)
    return list(rows.values()), out


def issue_certificate(svc: Services, req: CertificateRequest) -> IssuedCertificate:
    """Issue a certificate for an attested key, or raise a CAServiceError naming what failed.

    The challenge is used up in the final transaction with the certificate
    (services/group_commit.py): of concurrent requests for one challenge only one is issued. On
    PostgreSQL, with a challenge whose nonce is derived from its id and a policy this process has
    read before, nothing is read first: the claim checks that the challenge is usable and the policy
    version still active (docs/adr/0007-challenge-nonce-derived-from-its-id.md). Otherwise the
    challenge and the policy are read first, and a used, expired or unknown challenge is refused
    before any work. A request refused before that transaction uses its challenge up in a short
    transaction of its own.
    """
    now = svc.clock.now()
    csr = parse_csr(req.csr_pem, allowed=KEY_TYPES)
    # PostgreSQL, the common case: nothing to read. The nonce is derived from the challenge id and
    # the policy is the version this process read last; the claim checks both (challenges.Expect).
    cached = policies.cached_active(svc.db.url, req.policy) if svc.db.is_postgres else None
    if cached is not None and has_derived_nonce(req.challenge_id):
        nonce = derived_nonce(req.challenge_id)
        try:
            build, hold = _prepare(svc, req, now, csr, nonce, cached)
        except CAServiceError:
            # decided under a pointer that may be stale, and before the challenge was looked at:
            # the read below decides (a refusal costs a second verification, an issuance none)
            pass
        else:
            expect = _expect(nonce, cached)
            try:
                issued: IssuedCertificate = svc.group_commit.submit(
                    svc.db, build, hold=hold, claim=(req.challenge_id, now, expect))
                return issued
            except PolicyMoved:  # another version is active now (or none): read it, appraise again
                pass
        policies.forget_active(svc.db.url, req.policy)
    for _ in range(_READ_ATTEMPTS):
        try:
            return _issue_after_read(svc, req, now, csr)
        except PolicyMoved:  # an activation committed between this read and the claim: again
            policies.forget_active(svc.db.url, req.policy)
    raise PolicyChanging(f"policy {req.policy} changed its active version during each of "
                         f"{_READ_ATTEMPTS} attempts to issue; retry")


def _expect(nonce: bytes, ref: policies.PolicyRef) -> Expect:
    """What the claim checks: the nonce the evidence was bound to, and the version appraised under."""
    return Expect(nonce=nonce, policy=ref.policy.name, version=ref.version, digest=ref.policy.digest)


# Reads of the challenge and the policy before the claim finds the policy moved; each move is an
# activation that committed within those few milliseconds.
_READ_ATTEMPTS = 3


def _issue_after_read(svc: Services, req: CertificateRequest, now: datetime, csr: ParsedCSR) -> IssuedCertificate:
    """The issuance with the challenge and the active policy read first.

    Raises:
        PolicyMoved: the active version changed between the read and the claim (nothing was used).
        CAServiceError: the refusal (the challenge is used up, unless it was unusable).
    """
    # One read: the challenge's nonce and the active policy
    policy_error: PolicyError | None = None
    fast = _pre_read_pg(svc, req.challenge_id, req.policy, now)
    if fast is not None:
        nonce, ref = fast
    else:
        with svc.db.read() as session:
            nonce = read_challenge(session, req.challenge_id, now)
            try:
                ref = policies.active_policy(session, req.policy)
            except PolicyError as exc:
                policy_error = exc
    if policy_error is not None:
        use_up(svc, req.challenge_id, now)
        raise policy_error
    if svc.db.is_postgres:
        policies.remember_active(svc.db.url, ref)
    try:
        build, hold = _prepare(svc, req, now, csr, nonce, ref)
    except CAServiceError:
        use_up(svc, req.challenge_id, now)
        raise
    # the claim checks the version read here is still the active one, and keeps it so until COMMIT
    expect = _expect(nonce, ref)
    result: IssuedCertificate = svc.group_commit.submit(svc.db, build, hold=hold,
                                                        claim=(req.challenge_id, now, expect))
    return result


# PostgreSQL, the common case in one statement on the DBAPI cursor: a usable challenge's nonce and the
# active version and digest of the policy (either NULL: the precise functions then say why).
_PRE_READ_PG = (
    "SELECT c.nonce, v.version, v.digest FROM (SELECT 1) AS one "
    "LEFT JOIN challenges c ON c.id = %s AND c.consumed_at IS NULL AND c.expires_at > %s "
    "LEFT JOIN policies p ON p.name = %s "
    "LEFT JOIN policy_versions v ON v.name = p.name AND v.version = p.active_version")


def _pre_read_pg(svc: Services, challenge_id: str, policy: str,
                 now: datetime) -> tuple[bytes, policies.PolicyRef] | None:
    """PostgreSQL, the common case: a usable challenge's nonce and the active policy this process
    has parsed already, in one statement on an autocommit connection (one round trip, no session).
    ``None`` for anything else (SQLite, an unusable challenge, a policy not parsed yet, none
    active): :func:`read_challenge` and :func:`policies.active_policy` then answer or say why."""
    if not svc.db.is_postgres or not valid_challenge_id(challenge_id):
        return None
    with svc.db.autocommit_cursor(_PRE_READ_PG) as cursor:
        cursor.execute(_PRE_READ_PG, (challenge_id, now.astimezone(UTC), policy))
        row = cursor.fetchone()
    nonce, version, digest = row if row is not None else (None, None, None)
    if nonce is None or version is None or digest is None:
        return None
    ref = policies.parsed_policy(policy, int(version), str(digest))
    return None if ref is None else (bytes(nonce), ref)


def _prepare(svc: Services, req: CertificateRequest, now: datetime, csr: ParsedCSR, nonce: bytes,
             ref: policies.PolicyRef) -> tuple[group_commit.Build, group_commit.Hold | None]:
    """Verify, bind and appraise; the final transaction's build step and row hold (or a refusal)."""
    check_applicable(ref.policy)  # an older stored GPU-only version admits nothing (policy.gpu_only)
    checked = verify_all(svc, req.evidence, now, ref.policy.revocation_rule)
    verified = checked.evidence
    refuse_unchecked_revocation(ref.policy, verified)
    for ve in verified:
        check_binding(ve.report_data, nonce, csr.spki_der)
    appraisal = appraise(ref.policy, verified, insecure_allowed=svc.settings.insecure)
    if not appraisal.passed:
        raise AppraisalFailed(
            f"{len(appraisal.failed)} check(s) of policy {ref.id} failed",
            policy=ref.id, failed_checks=[c.to_json() for c in appraisal.failed])
    issuance = check_request(ref.policy, csr, req.lifetime)
    loader = loaders.prepare(svc, ref.policy, verified, now, cvm_serial=req.cvm_serial)
    issuance = replace(issuance, lifetime=loader.cap_lifetime(issuance.lifetime, now))
    # notAfter never past the collateral the evidence was judged by (ca/lifetime.py)
    cap = cap_lifetime(ref.policy, now, issuance.lifetime, [ve.expires_at for ve in verified])
    issuance = replace(issuance, lifetime=cap.lifetime)

    issuer_key = svc.keys.private_key("issuing")
    issuer = svc.keys.certificate("issuing")
    serial_int = x509.random_serial_number()
    serial = format(serial_int, "x")
    evidence_rows, evidence_refs = _evidence_rows(req.evidence, now)
    collateral_json = checked.collateral_json()

    # Everything that does not depend on the log index is made here, before the batch takes the
    # sequencing lock: the certificate but for its EAR and signature, the EAR but for its index.
    template = prepare_end_entity(issuance, issuer_key=issuer_key, issuer=issuer, now=now, serial=serial_int,
                                  public_url=svc.settings.public_url, insecure=svc.settings.insecure,
                                  extensions=loader.extensions())
    base_ear = build_ear(verified, appraisal, policy_id=ref.id, issued_at=now, nonce=nonce, log_index=None,
                         profile=svc.settings.profile, collateral=collateral_json,
                         expires_at=leaf_not_after(issuance, now=now, issuer=issuer))  # EAR exp = notAfter
    if cap.collateral_expires_at is not None:
        base_ear["ca-service.collateral-expires-at"] = cap.collateral_expires_at.isoformat()
        base_ear["ca-service.collateral-expires-item"] = cap.expires_item
    base_ear.update(loader.ear_claims())
    appraisal_json = appraisal.to_json()
    evidence_pairs = [(e["type"], e["sha256"]) for e in evidence_refs]
    collateral_digests = sorted({d for ve in verified for d in ve.collateral_sha256.values()})

    def build(log_index: int) -> group_commit.Built:
        # Runs in the group-commit transaction, the sequencing lock held: the certificate names its
        # log index and the leaf names the certificate's digest (services/group_commit.py).
        ear = {**base_ear, "ca-service.log-index": log_index}
        cert = template.sign(ear)
        der = cert.public_bytes(serialization.Encoding.DER)
        row = {
            "serial": serial, "issued_at": now, "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc,
            "subject": template.subject, "spki_sha256": csr.spki_sha256, "evidence": evidence_refs,
            "policy_name": ref.policy.name, "policy_version": ref.version, "policy_digest": ref.policy.digest,
            "appraisal": appraisal_json | {"ear": ear, "collateral": collateral_json},
            "der": der, "status": "valid", "log_index": log_index, **loader.row_fields()}
        leaf = tlog_leaves.issuance_leaf(
            at=now, serial=serial, certificate_sha256=hashlib.sha256(der).hexdigest(), spki_sha256=csr.spki_sha256,
            evidence=evidence_pairs, collateral_sha256=collateral_digests,
            policy_name=ref.policy.name, policy_version=ref.version, policy_digest=ref.policy.digest,
            appraisal_status=ear["ear.status"],
        )
        issued = IssuedCertificate(serial=serial, certificate=cert, chain=(cert, issuer), appraisal=appraisal,
                                   ear=ear, policy=ref, log_index=log_index, collateral=collateral_json)
        return group_commit.Built(certificate=row, evidence=evidence_rows, leaf=leaf, result=issued)

    # a loader's CVM certificate is held (and re-checked) in the same transaction, before the log lock
    hold = None if loader.link is None else (lambda session: loader.hold(session, now))
    return build, hold


def normalise_serial(serial: str) -> str:
    s = serial.lower().removeprefix("0x").lstrip("0") or "0"
    if len(s) > 42 or any(c not in "0123456789abcdef" for c in s):
        raise NotFound("no certificate with this serial")
    return s


def get_certificate(svc: Services, serial: str) -> Certificate:
    with svc.db.read() as session:
        row = session.execute(
            select(Certificate).where(Certificate.serial == normalise_serial(serial))).scalar_one_or_none()
        if row is None:
            raise NotFound("no certificate with this serial")
        return row
