"""A single-replica lease: one row of ``anchor_worker_leases`` per duty, with a heartbeat and fencing.

Used by the anchoring worker (``anchor-worker``) and the collateral duty (``collateral-duty``). A
session advisory lock would not do: a replica frozen by SIGSTOP (or a paused VM) keeps its TCP
connection, so PostgreSQL never frees its lock, and no other replica ever runs the duty again.

- :meth:`Lease.hold` claims the row when it is free, expired or already ours (the row locked: one
  claimant wins), then renews it from a heartbeat thread every third of ``seconds`` while the block
  runs, and releases it at the end. A holder that stops renewing is taken over once it expires.
- :meth:`Lease.fence`, called first in each of the holder's write transactions, locks the row and
  lets the transaction go on only while this holder (its ``holder`` token: host, pid and a random
  part) still holds it; otherwise it raises the given :class:`~ca_service.errors.LeaseLost` subclass
  and the transaction rolls back. So a holder that resumes after losing the lease writes nothing.
- On PostgreSQL the lease's clock is the database's (replicas' clocks need not agree), and a fenced
  transaction sets ``idle_in_transaction_session_timeout`` to the lease's length: a holder frozen
  inside one (the row locked) is cut off by the server, and its transaction rolled back, instead of
  holding the row against every claimant forever. A claim waits for the row at most that long too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ca_service.clock import Clock
from ca_service.db.models.anchor import AnchorWorkerLease
from ca_service.db.session import Database
from ca_service.errors import LeaseLost

# what a fenced write takes (``Lease.fence``): run first in its transaction, it raises LeaseLost once
# another holder has the lease
Fence = Callable[[Session], None]

log = logging.getLogger(__name__)


def new_holder() -> str:
    """A holder token: host and pid for the operator, a random part to tell holders apart."""
    return f"{socket.gethostname()[:20]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class Lease:
    def __init__(self, db: Database, clock: Clock, name: str, *, seconds: float,
                 error: type[LeaseLost] = LeaseLost, holder: str | None = None) -> None:
        self.db, self.clock, self.name, self.seconds, self.error = db, clock, name, seconds, error
        self.holder = holder or new_holder()
        self.lost = threading.Event()

    def _ms(self) -> int:
        return max(1000, int(self.seconds * 1000))

    def now(self, s: Session) -> datetime:
        """The lease's clock: PostgreSQL's on PostgreSQL, so replicas' clocks need not agree."""
        if self.db.is_postgres:
            return cast(datetime, s.scalar(text("SELECT clock_timestamp()")))
        return self.clock.now()

    def claim(self) -> bool:
        """Take the lease when it is free, expired or ours (the row locked: one claimant wins)."""
        try:
            with self.db.transaction() as s:
                if self.db.is_postgres:  # a holder frozen inside a fenced transaction is cut off by then
                    s.execute(text(f"SET LOCAL lock_timeout = {self._ms()}"))
                now = self.now(s)
                lease = s.get(AnchorWorkerLease, self.name, with_for_update=True, populate_existing=True)
                until = now + timedelta(seconds=self.seconds)
                if lease is None:
                    s.add(AnchorWorkerLease(name=self.name, holder=self.holder, expires_at=until))
                elif lease.holder != self.holder and lease.expires_at > now:
                    return False
                else:
                    if lease.holder != self.holder:
                        log.warning("%s lease taken over from %s (expired)", self.name, lease.holder,
                                    extra={"holder": self.holder})
                    lease.holder, lease.expires_at = self.holder, until
        except IntegrityError:  # another claimant inserted the first row at the same time
            return False
        except DBAPIError as exc:  # lock_timeout: the row stays locked (its holder is being cut off)
            code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)  # psycopg2 | 3
            if self.db.is_postgres and code == "55P03":
                return False
            raise
        self.lost.clear()
        return True

    def fence(self, s: Session) -> None:
        """First in a write transaction of the holder: lock the row and go on only while we hold it
        (renewing it).

        Raises:
            the lease's ``error`` (a :class:`~ca_service.errors.LeaseLost`): another holder took it over.
        """
        if self.db.is_postgres:
            s.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {self._ms()}"))
        lease = s.get(AnchorWorkerLease, self.name, with_for_update=True, populate_existing=True)
        if lease is None or lease.holder != self.holder:
            self.lost.set()
            raise self.error(f"another holder took the {self.name} lease over; this one stops",
                             holder=lease.holder if lease is not None else None)
        lease.expires_at = self.now(s) + timedelta(seconds=self.seconds)

    def ensure(self) -> None:
        """Before anything leaves the process (a broadcast): still the holder?

        Raises:
            the lease's ``error``.
        """
        if self.lost.is_set():
            raise self.error(f"another holder took the {self.name} lease over; this one stops")
        with self.db.transaction() as s:
            self.fence(s)

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew every third of the lease while the block runs. A frozen process renews nothing; on
        resume the first renewal that finds another holder marks the lease lost."""
        every = max(0.2, self.seconds / 3)
        while not stop.wait(every):
            try:
                with self.db.transaction() as s:
                    self.fence(s)
            except LeaseLost:
                log.warning("%s lease lost to another holder", self.name, extra={"holder": self.holder})
                return
            except Exception:  # a database hiccup: the next beat or the holder's own fence decides
                log.warning("%s lease heartbeat failed", self.name, extra={"holder": self.holder})

    def release(self) -> None:
        try:
            with self.db.transaction() as s:
                now = self.now(s)
                s.execute(update(AnchorWorkerLease)
                          .where(AnchorWorkerLease.name == self.name, AnchorWorkerLease.holder == self.holder)
                          .values(expires_at=now))
        except Exception:  # it expires by itself
            log.warning("could not release the %s lease", self.name, extra={"holder": self.holder})

    @contextmanager
    def hold(self, *, wait_seconds: float = 0.0, poll: float = 0.25) -> Iterator[bool]:
        """Hold the lease for the block (True, renewed by a heartbeat), or not get it within
        ``wait_seconds`` (False)."""
        deadline = time.monotonic() + wait_seconds
        while not self.claim():
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(poll)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), name=f"{self.name}-lease", daemon=True)
        beat.start()
        try:
            yield True
        finally:
            stop.set()
            beat.join()
            if not self.lost.is_set():
                self.release()
