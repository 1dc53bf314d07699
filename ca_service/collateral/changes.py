"""Which cached collateral resources changed in a way that can change a verdict (issue 14, TCB recovery).

The cache only grows (``collateral/store.py``): a refresh or an import adds rows, and row ids increase.
A run of re-appraisal remembers the highest id it has seen (its high-water mark); the rows added since
then are compared, per resource (kind, key), with the rows the CA held before. A resource *changed* when:

- TCB Info or QE Identity: its ``tcbEvaluationDataNumber`` is higher than every one held before (Intel
  re-issues the same evaluation daily with a new ``issueDate``/``nextUpdate``: that is no change; a new
  number is a TCB recovery, "Intel SGX and Intel TDX TCB Recovery", and may turn UpToDate into OutOfDate);
- a CRL (Intel PCK and Root CA CRL, AMD VCEK and VLEK CRL): it revokes a serial the newest CRL held before
  did not (a re-issued CRL with the same entries judges nothing differently);
- an NVIDIA OCSP answer: the certificate's status differs from the newest answer held (answers are
  re-issued every few hours with a new producedAt: that is no change, a revocation is);
- anything else (a VCEK, an AMD cert_chain, other vendors' items): any new content;
- any kind: the CA held nothing for it before (evidence judged without it, e.g. with a CRL missing and
  the policy accepting that, is judged again now that it exists).

Which certificates a changed resource concerns is the families' own answer (``evidence/needs.py``,
used by ``services/reappraisal.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca_service.collateral.endpoints import Kind
from ca_service.db.models.collateral import CollateralItem

CRL_KINDS = frozenset({Kind.PCK_CRL.value, Kind.ROOT_CA_CRL.value, Kind.VCEK_CRL.value, Kind.VLEK_CRL.value})
TCB_KINDS = frozenset(k.value for k in Kind if k.has_tcb_evaluation_number)


@dataclass(frozen=True)
class Change:
    """One resource whose new collateral can change a verdict, and why (shown to the operator)."""

    kind: str
    key: str
    url: str
    reason: str

    @property
    def resource(self) -> tuple[str, str]:
        return self.kind, self.key

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "url": self.url, "reason": self.reason}


def high_water(session: Session) -> int:
    """The highest collateral row id now (0 for an empty cache)."""
    return int(session.scalar(select(func.max(CollateralItem.id))) or 0)


def _revoked(row: CollateralItem) -> frozenset[int] | None:
    from ca_service.collateral.verify import crl_der
    from ca_service.errors import CAServiceError

    try:
        return frozenset(e.serial_number for e in x509.load_der_x509_crl(crl_der(row.body, row.kind)))
    except (CAServiceError, ValueError):  # cached rows were verified; an unreadable one counts as changed
        return None


def _newest(rows: list[CollateralItem]) -> CollateralItem:
    return max(rows, key=lambda r: (r.issue_date, r.id))


def _change(new: list[CollateralItem], old: list[CollateralItem]) -> str | None:
    kind = new[0].kind
    if not old:
        return f"first {kind} held"
    if kind in TCB_KINDS:
        before = max((r.tcb_evaluation_data_number or 0) for r in old)
        after = max((r.tcb_evaluation_data_number or 0) for r in new)
        return f"tcbEvaluationDataNumber {before} -> {after}" if after > before else None
    if kind in CRL_KINDS:
        latest = _newest(new)
        if latest.issue_date <= _newest(old).issue_date:
            return None  # an older CRL arriving late changes nothing the newer one says
        before_set, after_set = _revoked(_newest(old)), _revoked(latest)
        if before_set is None or after_set is None:
            return "CRL replaced"
        added = after_set - before_set
        return f"CRL revokes {len(added)} more certificate(s)" if added else None
    if kind == Kind.NVIDIA_OCSP.value:
        before_status, after_status = _ocsp_status(_newest(old)), _ocsp_status(_newest(new))
        return None if before_status == after_status else f"OCSP status {before_status} -> {after_status}"
    return "new content"


def _ocsp_status(row: CollateralItem) -> str:
    from cryptography.x509 import ocsp

    try:
        return str(ocsp.load_der_ocsp_response(row.body).certificate_status.name).lower()
    except ValueError:  # cached rows were verified; an unreadable one counts as changed
        return f"unreadable#{row.id}"


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found: the changes, the new high-water mark, and the ids at or below it that
    were not visible (another transaction had them open, or rolled back): look at those again next time."""

    changes: list[Change]
    high_water: int
    missing: frozenset[int]


def scan(session: Session, after: int, *, also: frozenset[int] = frozenset()) -> Scan:
    """The resources changed by the rows with ids above ``after`` or in ``also`` (ids a previous scan
    could not see), compared with every other row of the same resource (module docstring).

    PostgreSQL hands out ids before commit, so a row may become visible after a higher one: ids below
    the new high-water mark that are absent are returned in ``missing`` rather than skipped for good.
    """
    stmt = select(CollateralItem).where(CollateralItem.id > after)
    if also:
        stmt = select(CollateralItem).where((CollateralItem.id > after) | CollateralItem.id.in_(sorted(also)))
    added: dict[tuple[str, str], list[CollateralItem]] = {}
    ids: set[int] = set()
    for row in session.scalars(stmt):
        added.setdefault((row.kind, row.key), []).append(row)
        ids.add(row.id)
    top = max([after, *ids])
    missing = (frozenset(range(after + 1, top + 1)) | also) - ids
    out = []
    for (kind, key), rows in sorted(added.items()):
        old = [r for r in session.scalars(select(CollateralItem).where(
            CollateralItem.kind == kind, CollateralItem.key == key)) if r.id not in ids]
        reason = _change(rows, old)
        if reason is not None:
            out.append(Change(kind, key, _newest(rows).url, reason))
    return Scan(out, top, missing)


def since(session: Session, after: int) -> list[Change]:
    """The resources changed by the rows with ids above ``after`` (what one refresh or import added)."""
    return scan(session, after).changes
