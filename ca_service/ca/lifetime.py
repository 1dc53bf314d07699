"""A certificate never outlives the collateral it was judged by (DESIGN.md "Evidence, collateral, trust
roots"; issue 14). Pure and cheap: a min over a few datetimes, on the issuance hot path.

``notAfter`` = the earliest of:
- ``now`` + the granted lifetime (the policy's ``certificate.max_lifetime`` ceiling, or less if asked);
- the ``nextUpdate`` of every collateral item an evidence item was judged against (TCB Info, QE Identity,
  PCK CRL, Root CA CRL, AMD CRL), plus the policy's grace ``collateral.max_age_past_next_update``
  (default 0: the certificate ends when the first of them is due);
- the ``notAfter`` of the vendor certificates in the chains (PCK chain, VCEK/ASK/ARK, collateral signing
  chains), plus the same grace.

When that leaves less than the policy's ``certificate.min_lifetime``, the request is refused with
``certificate.collateral_expiring``, naming the item that expires first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ca_service.errors import CollateralExpiring
from ca_service.policy.model import Policy, parse_duration


@dataclass(frozen=True)
class LifetimeCap:
    lifetime: timedelta  # what the certificate gets
    expires_item: str | None  # the collateral item that expires first (None: none was judged against)
    collateral_expires_at: datetime | None  # when it does (its own nextUpdate / notAfter, without grace)
    capped: bool  # True when the collateral, not the policy ceiling, set notAfter


def grace(policy: Policy) -> timedelta:
    value = policy.document.get("collateral", {}).get("max_age_past_next_update")
    return parse_duration(value) if value else timedelta(0)


def min_lifetime(policy: Policy) -> timedelta | None:
    value = policy.certificate.get("min_lifetime")
    return parse_duration(value) if value else None


def cap_lifetime(policy: Policy, now: datetime, lifetime: timedelta,
                 expiries: Iterable[Mapping[str, datetime]]) -> LifetimeCap:
    """The lifetime a certificate gets when its evidence was judged against items expiring at ``expiries``
    (one mapping per evidence item, as ``VerifiedEvidence.expires_at``).

    Raises:
        CollateralExpiring (``certificate.collateral_expiring``, 403): less than ``certificate.min_lifetime``
            would be left; ``fields`` name the item and when it expires.
    """
    first: tuple[datetime, str] | None = None
    for per_item in expiries:
        for name, at in per_item.items():
            if first is None or (at, name) < first:
                first = (at, name)
    if first is None:
        return LifetimeCap(lifetime, None, None, False)
    at, name = first
    until = at + grace(policy) - now
    granted = min(lifetime, until)
    floor = min_lifetime(policy)
    if granted <= timedelta(0) or (floor is not None and granted < floor):
        raise CollateralExpiring(
            f"{name} expires at {at.isoformat()}: the certificate would live {max(granted, timedelta(0))}, "
            f"less than the policy's minimum {floor or timedelta(0)}",
            item=name, expires_at=at.isoformat(), min_lifetime=str(floor or timedelta(0)))
    return LifetimeCap(granted, name, at, granted < lifetime)


def result_expiry(policy: Policy, now: datetime, expiries: Iterable[Mapping[str, datetime]]) -> datetime:
    """When an attestation result (the EAR JWT of ``POST /v1/attestations``) expires: the ``notAfter``
    a certificate issued now on the same evidence would get, that is ``now`` + the policy's
    ``certificate.max_lifetime``, capped by the first collateral expiry plus the grace. Never
    refused (the result may be ``contraindicated`` anyway); never before ``now``."""
    until = now + policy.max_lifetime
    for per_item in expiries:
        for at in per_item.values():
            until = min(until, at + grace(policy))
    return max(until, now)
