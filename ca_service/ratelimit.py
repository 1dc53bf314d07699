"""Per-client token buckets shared by every worker process of one host, without the database.

Each bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes
one, and when none is left it is refused with the seconds until one is back (``Retry-After``).

The buckets live in a fixed-size table of slots in a file that ``ca-service serve`` creates before
it forks its workers (``$CA_SERVICE_HOME/run/ratelimit``), mapped with ``mmap`` into each of them;
outside ``serve`` (tests, an embedding app) the table is anonymous memory of one process. An
update takes a thread lock and an ``flock`` on the file, a few microseconds, and the kernel drops
the ``flock`` of a worker that dies holding it, so a killed worker can never wedge the others.

A slot is found by open addressing over ``PROBES`` slots from the key's hash; when all of them
belong to other keys, the one that is (or would by now be) the fullest is taken over, which is
what a bucket left alone becomes anyway. The table therefore never grows, and a flood of distinct
clients takes over full buckets first: a client that is being held back keeps its empty bucket,
and a client that is evicted starts again with a full one, as if it had waited.

Time is ``time.monotonic()`` (CLOCK_MONOTONIC, the same in every process of a host).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"CASRL001"
_HEADER = struct.Struct("<8sI")  # magic, slot count
_SLOT = struct.Struct("<Qdd")  # key hash (0: empty), tokens, last update
PROBES = 8
DEFAULT_SLOTS = 16384


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until a token is back (0 when allowed)
    remaining: float  # tokens left after this request


class Buckets:
    """Token buckets in a table of ``slots`` slots, in ``path`` (shared) or in this process only."""

    def __init__(self, *, rate: float, burst: int, path: Path | None = None, slots: int = DEFAULT_SLOTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or slots < PROBES:
            raise ValueError("rate must be positive, burst at least 1, slots at least PROBES")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        size = _HEADER.size + slots * _SLOT.size
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
            _HEADER.pack_into(self._map, 0, MAGIC, slots)
        else:
            # never resized here: another process may have it mapped (a shrink would SIGBUS it)
            self._fd = os.open(path, os.O_RDWR)
            with _flocked(self._fd):
                ok = os.fstat(self._fd).st_size >= size and os.pread(self._fd, _HEADER.size, 0) == _HEADER.pack(
                    MAGIC, slots)
                if ok:
                    self._map = mmap.mmap(self._fd, size)
            if not ok:
                os.close(self._fd)
                raise ValueError(f"{path} is not a rate-limit table of {slots} slots")
        self.slots = slots

    @staticmethod
    def create(path: Path, slots: int = DEFAULT_SLOTS) -> Path:
        """Make an empty table at ``path`` (``serve`` does it once, before forking its workers).
        Emptied, not truncated, when it exists: another ``serve`` of this home may map it."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        size = _HEADER.size + slots * _SLOT.size
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with _flocked(fd):
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                os.pwrite(fd, _HEADER.pack(MAGIC, slots) + bytes(slots * _SLOT.size), 0)
        finally:
            os.close(fd)
        return path

    def take(self, key: str) -> Decision:
        """Take one token from ``key``'s bucket."""
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        start = h % self.slots
        with self._lock, _flocked(self._fd):
            now = self._clock()
            victim, victim_level = -1, -1.0
            for i in range(PROBES):
                idx = (start + i) % self.slots
                off = _HEADER.size + idx * _SLOT.size
                slot_key, tokens, last = _SLOT.unpack_from(self._map, off)
                if slot_key == h:
                    return self._spend(off, h, tokens, last, now)
                if slot_key == 0:
                    return self._spend(off, h, self.burst, now, now)
                level = min(self.burst, tokens + max(0.0, now - last) * self.rate)
                if level > victim_level:
                    victim, victim_level = off, level
            return self._spend(victim, h, self.burst, now, now)

    def _spend(self, off: int, h: int, tokens: float, last: float, now: float) -> Decision:
        level = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if level >= 1.0:
            _SLOT.pack_into(self._map, off, h, level - 1.0, now)
            return Decision(True, 0.0, level - 1.0)
        _SLOT.pack_into(self._map, off, h, level, now)
        return Decision(False, (1.0 - level) / self.rate, level)

    def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def retry_after_seconds(decision: Decision) -> int:
    """``Retry-After`` is whole seconds (RFC 9110 section 10.2.3): round up, at least 1."""
    return max(1, math.ceil(decision.retry_after))


class _flocked:  # noqa: N801 - used as a context manager, like a function
    """``flock(LOCK_EX)`` on ``fd`` for the block (nothing for an in-process table)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
