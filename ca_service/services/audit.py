"""The append-only audit table: who did what, when, with before/after digests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ca_service.db.models import AuditEvent


def record(session: Session, *, at: datetime, actor: str, action: str, target: str,
           before: str | None = None, after: str | None = None, detail: dict[str, Any] | None = None) -> None:
    session.add(AuditEvent(at=at, actor=actor, action=action, target=target, before=before, after=after,
                           detail=detail or {}))
