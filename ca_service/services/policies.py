"""Policy administration: apply (content-addressed, idempotent), activate, read."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca_service.db.models import Policy as PolicyRow
from ca_service.db.models import PolicyVersion
from ca_service.errors import PolicyInactive, PolicyNotFound
from ca_service.policy.model import Policy, load_policy, policy_from_canonical
from ca_service.services import audit
from ca_service.services.container import Services

_parsed: dict[str, Policy] = {}
_parsed_lock = threading.Lock()


@dataclass(frozen=True)
class PolicyRef:
    policy: Policy
    version: int
    active: bool = False

    @property
    def id(self) -> str:
        return self.policy.policy_id(self.version)

    def to_json(self) -> dict[str, object]:
        return {"name": self.policy.name, "version": self.version, "digest": self.policy.digest,
                "active": self.active, "document": self.policy.document}


def _parse_cached(canonical: bytes, digest: str) -> Policy:
    with _parsed_lock:
        hit = _parsed.get(digest)
    if hit is None:
        hit = policy_from_canonical(canonical)
        with _parsed_lock:
            _parsed[digest] = hit
    return hit


def apply_policy_in(session: Session, source: str | bytes, *, actor: str, now: datetime) -> tuple[PolicyRef, bool]:
    """Store a policy version inside the caller's transaction. Returns (ref, created)."""
    policy = load_policy(source)
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
    audit.record(session, at=now, actor=actor, action="policy.apply", target=f"{policy.name}@{version}",
                 after=policy.digest)
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
    before = None
    if row.active_version is not None:
        before = session.execute(select(PolicyVersion.digest).where(
            PolicyVersion.name == name, PolicyVersion.version == row.active_version)).scalar_one_or_none()
    row.active_version = version
    row.updated_at = now
    audit.record(session, at=now, actor=actor, action="policy.activate", target=f"{name}@{version}",
                 before=before, after=pv.digest)
    return PolicyRef(_parse_cached(pv.canonical, pv.digest), version, active=True)


def activate(svc: Services, name: str, version: int, *, actor: str) -> PolicyRef:
    with svc.db.transaction() as session:
        return activate_in(session, name, version, actor=actor, now=svc.clock.now())


def active_policy(session: Session, name: str) -> PolicyRef:
    """The active version of ``name``.

    Raises:
        PolicyNotFound (``policy.not_found``), PolicyInactive (``policy.inactive``).
    """
    row = session.execute(
        select(PolicyVersion.version, PolicyVersion.digest, PolicyVersion.canonical)
        .join(PolicyRow, PolicyRow.name == PolicyVersion.name)
        .where(PolicyRow.name == name, PolicyVersion.version == PolicyRow.active_version)
    ).one_or_none()
    if row is None:
        exists = session.get(PolicyRow, name)
        if exists is None:
            raise PolicyNotFound(f"no policy named {name!r}")
        raise PolicyInactive(f"policy {name!r} has no active version")
    return PolicyRef(_parse_cached(row.canonical, row.digest), row.version, active=True)


def list_policies(svc: Services) -> list[dict[str, object]]:
    with svc.db.read() as session:
        rows = session.execute(select(PolicyRow).order_by(PolicyRow.name)).scalars().all()
        out: list[dict[str, object]] = []
        for r in rows:
            versions = session.execute(select(PolicyVersion).where(PolicyVersion.name == r.name)
                                       .order_by(PolicyVersion.version)).scalars().all()
            out.append({"name": r.name, "active_version": r.active_version, "versions": [
                {"version": v.version, "digest": v.digest, "created_at": v.created_at.isoformat(),
                 "created_by": v.created_by} for v in versions]})
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
                         active=row is not None and row.active_version == pv.version)
