"""Reading the audit table (``GET /v1/audit``, newest first, keyset-paginated by id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ca_service.db.models import AuditEvent
from ca_service.services.container import Services

MAX_PAGE = 500


def list_events(svc: Services, *, limit: int = 100, before_id: int | None = None, action: str | None = None,
                target: str | None = None, target_prefix: str | None = None) -> dict[str, Any]:
    """A page of audit events, newest first; ``next_before_id`` continues the listing."""
    limit = max(1, min(limit, MAX_PAGE))
    q = select(AuditEvent)
    if before_id is not None:
        q = q.where(AuditEvent.id < before_id)
    if action:
        q = q.where(AuditEvent.action == action)
    if target:
        q = q.where(AuditEvent.target == target)
    if target_prefix:
        q = q.where(AuditEvent.target.startswith(target_prefix, autoescape=True))
    with svc.db.read() as session:
        rows = session.execute(q.order_by(AuditEvent.id.desc()).limit(limit + 1)).scalars().all()
        events = [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
                   "before": r.before, "after": r.after, "detail": r.detail} for r in rows[:limit]]
    return {"events": events, "next_before_id": events[-1]["id"] if len(rows) > limit else None}
