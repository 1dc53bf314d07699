"""Policy administration: apply (content-addressed, idempotent), activate, retire, read, diff.

Every state change writes, in the caller's one transaction, the audit record (who, what, when,
before/after digests) and a ``policy`` leaf in the transparency log, so anchors cover policy
history; retiring with ``revoke`` also revokes the certificates the version admitted, each with a
``revocation`` leaf. Log leaves are appended last: the sequencing lock is held until COMMIT.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ca_service.db.models import Certificate, PolicyVersion
from ca_service.db.models import Policy as PolicyRow
from ca_service.errors import PolicyInactive, PolicyNotFound, PolicyRetired, PolicyVersionActive, RequestError
from ca_service.policy.diff import Change, diff_policies
from ca_service.policy.model import Policy, check_applicable, load_policy, policy_from_canonical
from ca_service.services import audit
from ca_service.services.container import Services
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf

# RFC 5280 CRLReason names a retirement may give (x509.ReasonFlags values).
RETIRE_REASONS = ("superseded", "cessationOfOperation", "privilegeWithdrawn", "affiliationChanged")

_parsed: dict[str, Policy] = {}
_parsed_lock = threading.Lock()


@dataclass(frozen=True)
class PolicyRef:
    policy: Policy
    version: int
    active: bool = False
    retired_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.policy.policy_id(self.version)

    def to_json(self) -> dict[str, object]:
        return {"name": self.policy.name, "version": self.version, "digest": self.policy.digest,
                "id": self.id, "active": self.active,
                "retired_at": self.retired_at.isoformat() if self.retired_at else None,
                "document": self.policy.document}


def log_actor(actor: str) -> str:
    """The actor as a log-leaf token (``[A-Za-z0-9._:@/+-]{1,128}``)."""
    return re.sub(r"[^A-Za-z0-9._:@/+-]", "-", actor)[:128] or "unknown"


def _policy_event(session: Session, *, now: datetime, actor: str, action: str, name: str, version: int,
                  before: str | None, after: str | None, digest: str, detail: dict[str, Any] | None = None) -> None:
    """Audit record + transparency-log leaf of one policy event, in the caller's transaction."""
    audit.record(session, at=now, actor=actor, action=f"policy.{action}", target=f"{name}@{version}",
                 before=before, after=after, detail=detail)
    leaf_action = "create" if action == "apply" else action
    session.flush()
    append_leaf(session, tlog_leaves.policy_leaf(at=now, action=leaf_action, name=name, version=version,
                                                 digest=digest, actor=log_actor(actor)))


# On the issuance hot path: the active version and its digest, one textual statement; the
# document is parsed once per process and found again by its digest (issue 15).
_ACTIVE = text(
    "SELECT v.version, v.digest FROM policies p "
    "JOIN policy_versions v ON v.name = p.name AND v.version = p.active_version WHERE p.name = :name")


# The active version of each policy as this process last read it (issue 15: the policy pointer
# cached per process). Only a hint: an issuance appraised under it is claimed only if that version
# is still the active one, checked in the claim's statement (services/challenges.py Expect); one
# that was not is read again (services/issuance.py).
_pointers: dict[tuple[str, str], PolicyRef] = {}


def cached_active(database: str, name: str) -> PolicyRef | None:
    """The active version of ``name`` in ``database`` (its URL) as this process last read it."""
    with _parsed_lock:
        return _pointers.get((database, name))


def remember_active(database: str, ref: PolicyRef) -> None:
    with _parsed_lock:
        _pointers[(database, ref.policy.name)] = ref


def forget_active(database: str, name: str) -> None:
    """Drop this process's pointer for ``name`` (its claim found another version active)."""
    with _parsed_lock:
        _pointers.pop((database, name), None)


def parsed_policy(name: str, version: int, digest: str) -> PolicyRef | None:
    """The active ``version`` of ``name`` as a PolicyRef, when this process has parsed the document
    of ``digest`` already (the issuance pre-read found version and digest); else ``None``."""
    with _parsed_lock:
        policy = _parsed.get(digest)
    return None if policy is None or policy.name != name else PolicyRef(policy, version, active=True)


def _parse_cached(canonical: bytes, digest: str) -> Policy:
    with _parsed_lock:
        hit = _parsed.get(digest)
    if hit is None:
        hit = policy_from_canonical(canonical)
        with _parsed_lock:
            _parsed[digest] = hit
    return hit


def apply_policy_in(session: Session, source: str | bytes, *, actor: str, now: datetime) -> tuple[PolicyRef, bool]:
    """Store a policy version inside the caller's transaction. Returns (ref, created).

    Raises:
        PolicyError (``policy.invalid``), PolicyGpuOnly (``policy.gpu_only``).
    """
    policy = load_policy(source)
    check_applicable(policy)
    existing = session.execute(
        select(PolicyVersion).where(PolicyVersion.name == policy.name, PolicyVersion.digest == policy.digest)
    ).scalar_one_or_none()
    if existing is not None:
        return PolicyRef(policy, existing.version), False
    row = session.get(PolicyRow, policy.name, with_for_update=True)
    if row is None:
        row = PolicyRow(name=policy.name, active_version=None, created_at=now, updated_at=now)
        session.add(row)
        session.flush()
    latest = session.execute(
        select(func.max(PolicyVersion.version)).where(PolicyVersion.name == policy.name)
    ).scalar_one()
    version = (latest or 0) + 1
    session.add(PolicyVersion(name=policy.name, version=version, digest=policy.digest, canonical=policy.canonical,
                              source=source if isinstance(source, str) else source.decode("utf-8", "replace"),
                              created_at=now, created_by=actor))
    row.updated_at = now
    _policy_event(session, now=now, actor=actor, action="apply", name=policy.name, version=version,
                  before=None, after=policy.digest, digest=policy.digest)
    return PolicyRef(policy, version), True


def apply_policy(svc: Services, source: str | bytes, *, actor: str) -> tuple[PolicyRef, bool]:
    with svc.db.transaction() as session:
        return apply_policy_in(session, source, actor=actor, now=svc.clock.now())


def activate_in(session: Session, name: str, version: int, *, actor: str, now: datetime) -> PolicyRef:
    row = session.get(PolicyRow, name, with_for_update=True)
    pv = session.execute(
        select(PolicyVersion).where(PolicyVersion.name == name, PolicyVersion.version == version)
    ).scalar_one_or_none()
    if row is None or pv is None:
        raise PolicyNotFound(f"policy {name} version {version} does not exist")
    if pv.retired_at is not None:
        raise PolicyRetired(f"policy {name} version {version} is retired and cannot be activated again",
                            retired_at=pv.retired_at.isoformat())
    ref = PolicyRef(_parse_cached(pv.canonical, pv.digest), version, active=True)
    check_applicable(ref.policy)  # a version stored before the rule existed is not activated either
    if row.active_version == version:
        return ref  # already active: nothing changes, nothing to record
    before = None
    if row.active_version is not None:
        before = session.execute(select(PolicyVersion.digest).where(
            PolicyVersion.name == name, PolicyVersion.version == row.active_version)).scalar_one_or_none()
    row.active_version = version
    row.updated_at = now
    _policy_event(session, now=now, actor=actor, action="activate", name=name, version=version,
                  before=before, after=pv.digest, digest=pv.digest,
                  detail={"previous_version": _version_of(session, name, before)})
    return ref


def _version_of(session: Session, name: str, digest: str | None) -> int | None:
    if digest is None:
        return None
    v: int | None = session.execute(select(PolicyVersion.version).where(
        PolicyVersion.name == name, PolicyVersion.digest == digest)).scalar_one_or_none()
    return v


def activate(svc: Services, name: str, version: int, *, actor: str) -> PolicyRef:
    with svc.db.transaction() as session:
        return activate_in(session, name, version, actor=actor, now=svc.clock.now())


@dataclass(frozen=True)
class RetireResult:
    ref: PolicyRef
    revoked: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.ref.policy.name, "version": self.ref.version, "digest": self.ref.policy.digest,
                "retired_at": self.ref.retired_at.isoformat() if self.ref.retired_at else None,
                "revoked": list(self.revoked)}


def retire_in(session: Session, name: str, version: int, *, actor: str, now: datetime, revoke: bool = False,
              reason: str = "superseded") -> RetireResult:
    """Retire a version (it can no longer be activated); with ``revoke``, revoke the still-valid
    certificates it admitted, each with an audit record and a ``revocation`` log leaf.

    Raises:
        PolicyNotFound (``policy.not_found``), PolicyRetired (``policy.retired``: already retired),
        PolicyVersionActive (``policy.version_active``: activate another version first),
        RequestError (``request.invalid``: unknown reason).
    """
    if reason not in RETIRE_REASONS:
        raise RequestError(f"reason must be one of {', '.join(RETIRE_REASONS)}")
    row = session.get(PolicyRow, name, with_for_update=True)
    pv = session.execute(
        select(PolicyVersion).where(PolicyVersion.name == name, PolicyVersion.version == version)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None or pv is None:
        raise PolicyNotFound(f"policy {name} version {version} does not exist")
    if pv.retired_at is not None:
        raise PolicyRetired(f"policy {name} version {version} is already retired",
                            retired_at=pv.retired_at.isoformat())
    if row.active_version == version:
        raise PolicyVersionActive(f"policy {name} version {version} is active: activate another version first")
    pv.retired_at = now
    row.updated_at = now
    serials: list[str] = []
    if revoke:
        certs = session.execute(
            select(Certificate).where(Certificate.policy_name == name, Certificate.policy_version == version,
                                      Certificate.status == "valid", Certificate.not_after > now)
            .order_by(Certificate.issued_at).with_for_update()
        ).scalars().all()
        for cert in certs:
            cert.status = "revoked"
            cert.revoked_at = now
            cert.revocation_reason = reason
            serials.append(cert.serial)
            audit.record(session, at=now, actor=actor, action="certificate.revoke", target=cert.serial,
                         detail={"reason": reason, "policy": f"{name}@{version}"})
    _policy_event(session, now=now, actor=actor, action="retire", name=name, version=version,
                  before=pv.digest, after=None, digest=pv.digest,
                  detail={"revoke": revoke, "reason": reason if revoke else None, "revoked": len(serials)})
    for serial in serials:
        append_leaf(session, tlog_leaves.revocation_leaf(at=now, serial=serial, reason=reason))
    if serials:  # a CVM certificate revoked here takes its loaders' with it
        from ca_service.services.loaders import revoke_loaders_in

        for serial in list(serials):
            serials += revoke_loaders_in(session, serial, now=now, actor=actor, reason=reason)
    ref = PolicyRef(_parse_cached(pv.canonical, pv.digest), version, active=False, retired_at=now)
    return RetireResult(ref, tuple(serials))


def retire(svc: Services, name: str, version: int, *, actor: str, revoke: bool = False,
           reason: str = "superseded") -> RetireResult:
    with svc.db.transaction() as session:
        return retire_in(session, name, version, actor=actor, now=svc.clock.now(), revoke=revoke, reason=reason)


def diff_versions(svc: Services, name: str, old: int, new: int | None = None) -> tuple[PolicyRef, PolicyRef,
                                                                                      tuple[Change, ...]]:
    """Differences from version ``old`` to ``new`` (default: the latest version)."""
    a = get_version(svc, name, old)
    b = get_version(svc, name, new if new is not None else latest_version(svc, name))
    return a, b, diff_policies(a.policy, b.policy)


def latest_version(svc: Services, name: str) -> int:
    with svc.db.read() as session:
        v = session.execute(select(func.max(PolicyVersion.version)).where(PolicyVersion.name == name)).scalar_one()
    if v is None:
        raise PolicyNotFound(f"no policy named {name!r}")
    return int(v)


def active_policy(session: Session, name: str) -> PolicyRef:
    """The active version of ``name``.

    Raises:
        PolicyNotFound (``policy.not_found``), PolicyInactive (``policy.inactive``).
    """
    row = session.execute(_ACTIVE, {"name": name}).one_or_none()
    if row is None:
        exists = session.get(PolicyRow, name)
        if exists is None:
            raise PolicyNotFound(f"no policy named {name!r}")
        raise PolicyInactive(f"policy {name!r} has no active version")
    with _parsed_lock:
        policy = _parsed.get(row.digest)
    if policy is None:  # first use in this process: fetch and parse the document once
        canonical = session.execute(select(PolicyVersion.canonical).where(
            PolicyVersion.name == name, PolicyVersion.version == row.version)).scalar_one()
        policy = _parse_cached(canonical, row.digest)
    return PolicyRef(policy, row.version, active=True)


def _summary(r: PolicyRow, versions: list[PolicyVersion]) -> dict[str, Any]:
    return {"name": r.name, "active_version": r.active_version, "updated_at": r.updated_at.isoformat(),
            "versions": [{"version": v.version, "digest": v.digest, "created_at": v.created_at.isoformat(),
                          "created_by": v.created_by, "active": v.version == r.active_version,
                          "retired_at": v.retired_at.isoformat() if v.retired_at else None} for v in versions]}


def list_policies(svc: Services) -> list[dict[str, Any]]:
    with svc.db.read() as session:
        rows = session.execute(select(PolicyRow).order_by(PolicyRow.name)).scalars().all()
        all_versions = session.execute(select(PolicyVersion).order_by(PolicyVersion.name, PolicyVersion.version)
                                       ).scalars().all()
        by_name: dict[str, list[PolicyVersion]] = {}
        for v in all_versions:
            by_name.setdefault(v.name, []).append(v)
        return [_summary(r, by_name.get(r.name, [])) for r in rows]


def describe_policy(svc: Services, name: str) -> dict[str, Any]:
    """One policy: its versions, and the active version's document (None when inactive)."""
    with svc.db.read() as session:
        row = session.get(PolicyRow, name)
        if row is None:
            raise PolicyNotFound(f"no policy named {name!r}")
        versions = list(session.execute(select(PolicyVersion).where(PolicyVersion.name == name)
                                        .order_by(PolicyVersion.version)).scalars().all())
        out = _summary(row, versions)
        active = next((v for v in versions if v.version == row.active_version), None)
        out["active"] = (PolicyRef(_parse_cached(active.canonical, active.digest), active.version, True).to_json()
                         if active is not None else None)
        return out


def get_version(svc: Services, name: str, version: int | None = None) -> PolicyRef:
    with svc.db.read() as session:
        if version is None:
            return active_policy(session, name)
        pv = session.execute(select(PolicyVersion).where(
            PolicyVersion.name == name, PolicyVersion.version == version)).scalar_one_or_none()
        if pv is None:
            raise PolicyNotFound(f"policy {name} version {version} does not exist")
        row = session.get(PolicyRow, name)
        return PolicyRef(_parse_cached(pv.canonical, pv.digest), pv.version,
                         active=row is not None and row.active_version == pv.version, retired_at=pv.retired_at)
