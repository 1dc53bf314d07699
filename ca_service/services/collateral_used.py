"""Which cached collateral items judged a piece of evidence: kind, key, digest, source and next update
(issue 14, "one cache, used everywhere"). Read back from the cache the same way the CA selects them:
the family states its needs (``evidence/needs.py``), each maps to its endpoint, and the row a verifier
at ``at`` uses is the one :func:`~ca_service.collateral.store.select_at` picks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ca_service.collateral.endpoints import endpoint_for
from ca_service.collateral.store import select_at
from ca_service.evidence.needs import needs_for
from ca_service.services.container import Services


def used_items(svc: Services, kind: str, evidence: bytes, at: datetime, *, update: str | None = None
               ) -> list[dict[str, Any]]:
    """The cached rows for ``kind`` evidence as of ``at`` (the first alternative the cache holds whole);
    [] when the cache holds no complete set."""
    with svc.db.read() as session:
        for alternative in needs_for(kind, evidence):
            rows = [select_at(session, ep.kind, ep.key, at)
                    for ep in (endpoint_for(n, update=update) for n in alternative)]
            if all(r is not None for r in rows):
                return [{"kind": r.kind, "key": r.key, "sha256": r.sha256, "source": r.url,
                         "fetched_at": r.fetched_at.isoformat(), "next_update": r.next_update.isoformat(),
                         "tcb_evaluation_data_number": r.tcb_evaluation_data_number}
                        for r in rows if r is not None]
    return []
