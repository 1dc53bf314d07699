"""Re-appraisal on collateral updates (issue 14, TCB recovery): every valid certificate whose evidence
was judged against collateral the CA now holds newer items of is verified again from its stored
evidence, with the CA's current collateral, under the policy version it was issued under; the result is
compared with what the certificate says.

:func:`reappraise` is the dry run (``ca-service reappraise --dry-run``): it changes nothing and reports, per
certificate, the status before and after and the reason (e.g. ``tdx-quote: TCB status UpToDate ->
OutOfDate, advisories +INTEL-SA-01079``, or the refusal code of a revoked PCK). Which certificates are
affected is decided with the families' own needs (``evidence/needs.py``): a certificate is examined
when one of the resources its evidence needs is among ``changed`` (or always, when ``changed`` is None).

:func:`apply` acts on a certificate the new collateral judges worse, as its policy version's
``collateral.on_collateral_update`` says (default ``warn``):
- ``revoke``: revoked with RFC 5280 reason privilegeWithdrawn (the attestation that granted it no longer
  holds), audit record and revocation leaf in one transaction, so the CRL and OCSP say so at once;
- ``warn``: the new status is recorded on the certificate (``appraisal.reappraisal``, shown by
  ``GET /v1/certificates/{serial}``), with an audit record, a ``reappraisal`` log leaf and a metric;
- ``ignore``: nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select

from ca_service import evidence as evidence_mod
from ca_service.collateral.endpoints import endpoint_for
from ca_service.db.lease import Fence
from ca_service.db.models import Certificate, EvidenceBlob
from ca_service.errors import CAServiceError, Conflict, RequestError
from ca_service.evidence.base import VerifiedEvidence
from ca_service.evidence.needs import needs_for, served
from ca_service.evidence.trust import TrustRoots
from ca_service.policy.appraise import appraise
from ca_service.services import audit, policies, revocation
from ca_service.services import collateral as collateral_service
from ca_service.services.container import Services
from ca_service.services.issuance import verify_kwargs
from ca_service.services.roots import trust_roots
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf

REAPPRAISED = Counter("ca_service_reappraisals_total", "Certificates judged worse by newer collateral, by action",
                      ["policy", "action"])
_ORDER = ("affirming", "warning", "none", "contraindicated", "refused")


@dataclass(frozen=True)
class Reappraised:
    serial: str
    policy: str
    before: str  # the EAR status the certificate carries
    after: str  # affirming | warning | contraindicated | refused
    changed: bool
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "policy": self.policy, "before": self.before, "after": self.after,
                "changed": self.changed, "reasons": list(self.reasons)}


def _resources(kind: str, data: bytes, recorded: tuple[bytes, ...] = (), roots: TrustRoots | None = None
               ) -> set[tuple[str, str]]:
    try:
        return {(ep.kind.value, ep.key) for alt in needs_for(kind, data, recorded, roots)
                for ep in map(endpoint_for, served(alt))}
    except CAServiceError:
        return set()


def _collateral_digests(cert: Certificate, kind: str) -> list[str]:
    """The digests of the collateral an evidence item was judged with, as its EAR records them."""
    sub = ((cert.appraisal or {}).get("ear") or {}).get("submods", {}).get(kind, {})
    digests = sub.get("ca-service.collateral-sha256", {})
    return [d for d in digests.values() if isinstance(d, str)] if isinstance(digests, dict) else []


def _recorded(cert: Certificate, kind: str, blobs: dict[str, bytes]) -> tuple[bytes, ...]:
    return tuple(blobs[d] for d in _collateral_digests(cert, kind) if d in blobs)


def _diff(kind: str, sub: dict[str, Any], ve: VerifiedEvidence) -> list[str]:
    out = []
    before_status = sub.get("ca-service.tcb-status")
    if before_status != ve.tcb_status:
        out.append(f"{kind}: TCB status {before_status} -> {ve.tcb_status}")
    before_adv = set(sub.get("ca-service.advisory-ids") or [])
    added, removed = sorted(set(ve.advisory_ids) - before_adv), sorted(before_adv - set(ve.advisory_ids))
    if added or removed:
        out.append(f"{kind}: advisories " + " ".join([f"+{a}" for a in added] + [f"-{a}" for a in removed]))
    return out


def _logs(record: dict[str, Any], blobs: dict[str, bytes]) -> tuple[bytes | None, bytes | None]:
    """The event log and IMA log recorded with an evidence item (docs/event-log.md); a recorded log
    that is no longer stored is an error, never a silent replay without it."""
    out: list[bytes | None] = []
    for key in ("event_log_sha256", "ima_log_sha256"):
        digest = record.get(key)
        if digest is not None and digest not in blobs:
            raise RequestError(f"the recorded {key[:-7]} is no longer stored")
        out.append(blobs[digest] if digest is not None else None)
    return out[0], out[1]


def reappraise_one(svc: Services, cert: Certificate, blobs: dict[str, bytes], at: datetime) -> Reappraised:
    ear = (cert.appraisal or {}).get("ear") or {}
    before = str(ear.get("ear.status", "none"))
    reasons: list[str] = []
    roots = trust_roots(svc)
    verified = []
    try:
        ref = policies.get_version(svc, cert.policy_name, cert.policy_version)
        for e in cert.evidence:
            kind, data = e["type"], blobs.get(e["sha256"])
            if data is None:
                raise RequestError(f"the recorded {kind} evidence is no longer stored")
            if kind in ("tdx-quote", "sgx-quote"):
                collateral = collateral_service.collateral_for(svc, kind, data, at, roots=roots)
            else:
                # what the request sent (an SNP VLEK, an NVIDIA device chain) is kept as blobs: it fills
                # what the CA's cache lacks, never displaces a newer cached item (resolve_collateral)
                collateral = collateral_service.resolve_collateral(
                    svc, kind, data, at, offered=_recorded(cert, kind, blobs), roots=roots).items
            logs = _logs(e, blobs)
            verified.append(evidence_mod.verify(kind, data, collateral=collateral, at=at, roots=roots,
                                                event_log=logs[0], ima_log=logs[1],
                                                **verify_kwargs(ref.policy.revocation_rule)))
    except CAServiceError as exc:
        return Reappraised(cert.serial, cert.policy_name, before, "refused", True,
                           (f"refused [{exc.code}]: {exc.detail}",))
    result = appraise(ref.policy, verified, insecure_allowed=svc.settings.insecure)
    for ve in verified:
        reasons += _diff(ve.kind, ear.get("submods", {}).get(ve.kind, {}), ve)
    from ca_service.ca.ear import build_ear

    after_ear = build_ear(verified, result, policy_id=ref.id, issued_at=at, profile=svc.settings.profile)
    after = "contraindicated" if not result.passed else str(after_ear["ear.status"])
    reasons += [f"policy check {c.claim} failed: expected {c.expected}, got {c.actual}" for c in result.failed]
    return Reappraised(cert.serial, cert.policy_name, before, after, after != before or bool(reasons),
                       tuple(reasons))


def reappraise(svc: Services, *, at: datetime | None = None,
               changed: Collection[tuple[str, str]] | None = None) -> list[Reappraised]:
    """Re-appraise (dry run) every valid certificate judged against the ``changed`` resources
    ((kind, key) of the collateral cache; None: every valid certificate), as of ``at`` (default now)."""
    at = at or svc.clock.now()
    with svc.db.read() as session:
        certs = list(session.scalars(select(Certificate).where(Certificate.status == "valid")
                                     .order_by(Certificate.issued_at)))
        wanted = sorted({e[k] for c in certs for e in c.evidence
                         for k in ("sha256", "event_log_sha256", "ima_log_sha256") if k in e}
                        | {d for c in certs for e in c.evidence for d in _collateral_digests(c, e["type"])})
        blobs = {b.sha256: b.data for b in session.scalars(
            select(EvidenceBlob).where(EvidenceBlob.sha256.in_(wanted)))} if wanted else {}
        for c in certs:
            session.expunge(c)
    out = []
    roots = trust_roots(svc)  # a GPU's needs are read from its device chain, ordered to the pinned root
    for cert in certs:
        if changed is not None:
            needed = set().union(*(_resources(e["type"], blobs.get(e["sha256"], b""), _recorded(cert, e["type"], blobs),
                                              roots) for e in cert.evidence))
            if not needed & set(changed):
                continue
        out.append(reappraise_one(svc, cert, blobs, at))
    return out


def _worse(r: Reappraised) -> bool:
    def rank(status: str) -> int:
        return _ORDER.index(status) if status in _ORDER else len(_ORDER)

    return rank(r.after) > rank(r.before)


def on_collateral_update(svc: Services, cert_policy: str, version: int) -> str:
    ref = policies.get_version(svc, cert_policy, version)
    return str(ref.policy.document.get("collateral", {}).get("on_collateral_update", "warn"))


def apply(svc: Services, results: list[Reappraised], *, actor: str,
          fence: Fence | None = None) -> list[dict[str, str]]:
    """Act on each certificate judged worse, as its policy version says (module docstring). Returns
    ``[{serial, action, before, after}]`` for every certificate acted on (ignore included).
    ``fence``: the collateral duty's lease (db/lease.py), checked first in each revocation's and
    flag's transaction; once another replica holds the lease it raises and nothing more is written."""
    out = []
    with svc.db.read() as session:
        versions = {c.serial: c.policy_version for c in session.scalars(
            select(Certificate).where(Certificate.serial.in_([r.serial for r in results])))}
    for r in results:
        if not _worse(r) or r.serial not in versions:
            continue
        action = on_collateral_update(svc, r.policy, versions[r.serial])
        if action == "revoke":
            try:
                revocation.revoke(svc, r.serial, reason="privilegeWithdrawn", actor=actor, fence=fence)
            except Conflict:
                continue  # revoked meanwhile: by an admin, or with its CVM certificate (loader cascade)
        elif action == "warn" and not _warn(svc, r, actor, fence):
            continue  # flagged for this finding already
        REAPPRAISED.labels(policy=r.policy, action=action).inc()
        out.append({"serial": r.serial, "action": action, "before": r.before, "after": r.after})
    return out


def _finding(after: object, reasons: Collection[str]) -> tuple[object, tuple[str, ...]]:
    """What a flag says, for comparing two runs: the status and the reasons, a refusal by its code only
    (its detail names the time of the run)."""
    return after, tuple(r.split("]", 1)[0] + "]" if r.startswith("refused [") else r for r in reasons)


def _warn(svc: Services, r: Reappraised, actor: str, fence: Fence | None = None) -> bool:
    now = svc.clock.now()
    with svc.db.transaction() as session:
        if fence is not None:
            fence(session)
        cert = session.scalars(select(Certificate).where(Certificate.serial == r.serial).with_for_update()).one()
        if cert.status != "valid":
            return False
        flag = (cert.appraisal or {}).get("reappraisal") or {}
        if _finding(flag.get("after"), flag.get("reasons") or []) == _finding(r.after, r.reasons):
            return False  # flagged already for the same finding: a second run (worker, CLI) adds nothing
        cert.appraisal = {**cert.appraisal, "reappraisal": {"at": now.isoformat(), "before": r.before,
                                                            "after": r.after, "reasons": list(r.reasons)}}
        audit.record(session, at=now, actor=actor, action="certificate.reappraised", target=r.serial,
                     before=r.before, after=r.after, detail={"reasons": list(r.reasons)})
        session.flush()
        append_leaf(session, tlog_leaves.reappraisal_leaf(at=now, serial=r.serial, before=r.before,
                                                           after=r.after, action="warn"))
    return True
