"""In-memory fakes shared by the anchor unit and integration tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ca_service.anchor.worker import Checkpoint


@dataclass
class StepClock:
    at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class ListSource:
    """An in-memory CheckpointSource: the test appends checkpoints as the log would publish them."""

    checkpoints: list[Checkpoint] = field(default_factory=list)

    def publish(self, size: int) -> Checkpoint:
        cp = Checkpoint(size=size, root=size.to_bytes(32, "big"), note=f"origin\n{size}\nroot\n".encode())
        self.checkpoints.append(cp)
        return cp

    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None
