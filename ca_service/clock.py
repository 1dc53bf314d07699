"""Time as an injected dependency: nothing below ``services/`` calls ``datetime.now()``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, UTC-aware."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that returns a set instant (tests, recorded evidence)."""

    at: datetime

    def now(self) -> datetime:
        return self.at


def require_aware(at: datetime) -> datetime:
    """Return ``at`` in UTC; refuse naive datetimes, which are ambiguous."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware instant")
    return at.astimezone(UTC)
