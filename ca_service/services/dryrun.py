"""Policy dry run: re-appraise recorded evidence against a candidate version, changing nothing.

For each selected certificate (recent issuances under the policy, or given serials) the evidence
recorded at issuance (``evidence_blobs``, by the digests the certificate names) is verified again
*as of its issuance time* (STYLE.md 7: time is an argument), with whatever collateral the
database holds for the digests its EAR names, then appraised against the candidate. The report
says, per certificate, whether the candidate would still admit it and, if not, every failed
check (claim, expected, actual). Evidence that no longer verifies (e.g. collateral not kept) is
reported as an error with its code, never as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ca_service import evidence as evidence_mod
from ca_service.db.models import Certificate, EvidenceBlob
from ca_service.errors import CAServiceError, InsecureEvidenceRefused, RequestError
from ca_service.evidence.base import VerifiedEvidence
from ca_service.policy.appraise import appraise
from ca_service.policy.model import Policy, load_policy
from ca_service.services import audit, policies
from ca_service.services.container import Services
from ca_service.services.issuance import normalise_serial, refuse_unchecked_revocation, verify_kwargs
from ca_service.services.roots import trust_roots

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class DryRunItem:
    serial: str
    issued_at: datetime
    admitted_by: int
    outcome: str  # pass | fail | error
    failed_checks: tuple[dict[str, Any], ...] = ()
    error: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"serial": self.serial, "issued_at": self.issued_at.isoformat(),
                               "admitted_by_version": self.admitted_by, "outcome": self.outcome}
        if self.failed_checks:
            out["failed_checks"] = list(self.failed_checks)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class DryRunReport:
    name: str
    candidate_version: int | None
    candidate_digest: str
    items: tuple[DryRunItem, ...] = field(default=())

    def count(self, outcome: str) -> int:
        return sum(1 for i in self.items if i.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.name, "candidate": {"version": self.candidate_version,
                                                   "digest": self.candidate_digest},
                "examined": len(self.items), "would_pass": self.count("pass"),
                "would_fail": self.count("fail"), "errors": self.count("error"),
                "results": [i.to_json() for i in self.items]}


@dataclass(frozen=True)
class _Recorded:
    serial: str
    issued_at: datetime
    version: int
    items: tuple[tuple[str, bytes | None, tuple[bytes, ...]], ...]
    logs: tuple[tuple[bytes | None, bytes | None], ...] = ()


def _collateral_digests(appraisal: dict[str, Any], kind: str) -> list[str]:
    sub = (appraisal.get("ear") or {}).get("submods", {}).get(kind, {})
    digests = sub.get("ca-service.collateral-sha256", {})
    return [d for d in digests.values() if isinstance(d, str)] if isinstance(digests, dict) else []


def _load(svc: Services, name: str, serials: list[str] | None, limit: int) -> list[_Recorded]:
    with svc.db.read() as session:
        q = select(Certificate).where(Certificate.policy_name == name)
        if serials is not None:
            q = q.where(Certificate.serial.in_([normalise_serial(s) for s in serials]))
        else:
            q = q.where(Certificate.status == "valid")
        certs = session.execute(q.order_by(Certificate.issued_at.desc()).limit(limit)).scalars().all()
        wanted = {e[k] for c in certs for e in c.evidence
                  for k in ("sha256", "event_log_sha256", "ima_log_sha256") if k in e}
        wanted |= {d for c in certs for e in c.evidence for d in _collateral_digests(c.appraisal, e["type"])}
        blobs = {b.sha256: b.data for b in session.execute(
            select(EvidenceBlob).where(EvidenceBlob.sha256.in_(sorted(wanted)))).scalars()} if wanted else {}
        out = []
        for c in certs:
            items = tuple((e["type"], blobs.get(e["sha256"]),
                           tuple(blobs[d] for d in _collateral_digests(c.appraisal, e["type"]) if d in blobs))
                          for e in c.evidence)
            logs = tuple((blobs.get(e["event_log_sha256"], b"") if "event_log_sha256" in e else None,
                          blobs.get(e["ima_log_sha256"], b"") if "ima_log_sha256" in e else None)
                         for e in c.evidence)
            out.append(_Recorded(c.serial, c.issued_at, c.policy_version, items, logs))
        return out


def _reverify(svc: Services, rec: _Recorded, candidate: Policy) -> list[VerifiedEvidence]:
    """The recorded items verified again as of their issuance, under the candidate's revocation rule
    (an unchecked revocation source is an error item unless the candidate allows it)."""
    roots = trust_roots(svc)
    verified = []
    for i, (kind, data, collateral) in enumerate(rec.items):
        # a recorded log no longer stored is b"" here: the replay then refuses, never passes without it
        event_log, ima_log = rec.logs[i] if i < len(rec.logs) else (None, None)
        if data is None:
            raise RequestError(f"the recorded {kind} evidence is no longer stored")
        if kind == "sim" and not svc.settings.insecure:
            raise InsecureEvidenceRefused("sim evidence is refused in the production profile")
        verified.append(evidence_mod.verify(kind, data, collateral=collateral, at=rec.issued_at, roots=roots,
                                            event_log=event_log, ima_log=ima_log,
                                            **verify_kwargs(candidate.revocation_rule)))
    refuse_unchecked_revocation(candidate, verified)
    return verified


def dry_run(svc: Services, name: str, *, actor: str, version: int | None = None, source: str | bytes | None = None,
            serials: list[str] | None = None, limit: int = DEFAULT_LIMIT) -> DryRunReport:
    """Re-appraise recorded issuances of ``name`` against a candidate: a stored ``version``, an
    unstored document ``source`` (same name), or by default the latest version.

    Raises:
        PolicyNotFound (``policy.not_found``), PolicyError (``policy.invalid``), RequestError.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestError(f"limit must be 1..{MAX_LIMIT}")
    if source is not None and version is not None:
        raise RequestError("give a candidate version or a document, not both")
    if source is not None:
        candidate = load_policy(source)
        if candidate.name != name:
            raise RequestError(f"the candidate document is policy {candidate.name!r}, not {name!r}")
        cand_version: int | None = None
        policies.describe_policy(svc, name)  # the policy must exist
    else:
        ref = policies.get_version(svc, name, version if version is not None else policies.latest_version(svc, name))
        candidate, cand_version = ref.policy, ref.version
    items = []
    for rec in _load(svc, name, serials, limit):
        try:
            verified = _reverify(svc, rec, candidate)
        except CAServiceError as exc:
            items.append(DryRunItem(rec.serial, rec.issued_at, rec.version, "error",
                                    error={"code": exc.code, "detail": exc.detail}))
            continue
        result = appraise(candidate, verified, insecure_allowed=svc.settings.insecure)
        items.append(DryRunItem(rec.serial, rec.issued_at, rec.version, "pass" if result.passed else "fail",
                                failed_checks=tuple(c.to_json() for c in result.failed)))
    report = DryRunReport(name, cand_version, candidate.digest, tuple(items))
    with svc.db.transaction() as session:  # who looked at what: the audit trail, nothing else
        audit.record(session, at=svc.clock.now(), actor=actor, action="policy.dry_run",
                     target=f"{name}@{cand_version}" if cand_version else f"{name}@candidate",
                     after=candidate.digest, detail={"examined": len(items), "would_fail": report.count("fail"),
                                                     "errors": report.count("error")})
    return report
