"""Group commit of issuances: one log-lock hold and one COMMIT for every issuance that is ready.

An issuance's last step takes the log's sequencing lock, reads the next index, signs the
certificate (which names that index), inserts certificate, evidence and leaf, and commits. The
lock is held across all of it, COMMIT's WAL flush included, so one issuance at a time can be in
that section on the whole cluster: at ~3-5 ms a hold, a ceiling of a few hundred per second however
many workers serve (issue 15).

This module applies the pattern of Trillian's sequencer and Tessera's batching within a
process: requests that are ready while a batch is committing queue up, and the next batch takes
them all, with consecutive indexes, in one transaction, one lock hold and one COMMIT. There is no
background thread: the first waiting request leads the next batch and runs it on its own thread
(leader/follower), so a lone request runs exactly as before, in a batch of one.

Invariants (tests/integration/test_group_commit.py):
- dense log, exactly one leaf per certificate: a batch's indexes are ``start .. start + k - 1``
  from one ``lock_and_next_index`` and its rows commit together or not at all. A process killed
  mid-batch commits nothing; none of its callers got a certificate.
- no partial issuance: a caller gets its certificate only after the COMMIT that stored it; if the
  transaction fails, every caller in the batch gets the error.
- one caller's bad item does not refuse the others: an error while building an item (before any
  row is written) goes to that caller only, and the next item takes the index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from ca_service.db.models import Certificate, EvidenceBlob
from ca_service.db.rawsql import RawInsert
from ca_service.db.session import Database
from ca_service.services.challenges import Expect, consume_challenges_in
from ca_service.tlog.sequencer import append_leaves_at, lock_and_next_index

# Enough to absorb every thread of a worker (gunicorn --threads) and bound one transaction.
MAX_BATCH = 64


@dataclass(frozen=True)
class Built:
    """One issuance's rows, built for its log index: the certificate row (a dict for Core INSERT),
    the evidence blobs it refers to, its leaf, and what the caller gets back after COMMIT."""

    certificate: dict[str, Any]
    evidence: list[dict[str, Any]]
    leaf: bytes
    result: Any


Build = Callable[[int], Built]
# Run in the batch's transaction before the log lock: an item's row locks (a loader's CVM
# certificate, services/loaders.py); raising refuses that item only.
Hold = Callable[[Session], None]
# A single-use challenge an item uses up in the batch's transaction, as of a time (its request's),
# and what the request assumed without reading it (services/challenges.py Expect), if anything.
Claim = tuple[str, datetime] | tuple[str, datetime, Expect | None]


@dataclass(eq=False)
class _Slot:
    build: Build
    hold: Hold | None = None
    claim: Claim | None = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class GroupCommitter:
    """Per-process batcher of the final issuance transaction (one per :class:`Services`)."""

    max_batch: int = MAX_BATCH
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _queue: list[_Slot] = field(default_factory=list, repr=False)
    _leading: bool = False
    batches: int = 0  # statistics, for tests and benchmarks
    batched: int = 0

    def submit(self, db: Database, build: Build, *, hold: Hold | None = None, claim: Claim | None = None) -> Any:
        """Run ``build(log_index)`` in a batch, commit, and return its ``result``. In the same
        transaction, before the log lock: ``claim``, a challenge this item uses up (refused when
        used or expired: then it is not built), and ``hold(session)``.

        Raises the claim's refusal, whatever ``hold`` or ``build`` raised for this item, or the batch
        transaction's error.
        """
        slot = _Slot(build, hold, claim)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._leading:
                    self._cond.wait()
                if slot.done:
                    break
                # lead the next batch: the oldest queued requests (this one among them, unless
                # more than max_batch are ahead of it; then it leads or joins a later batch)
                self._leading = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            try:
                self._run(db, batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run(self, db: Database, batch: list[_Slot]) -> None:
        built: list[tuple[_Slot, Built]] = []
        try:
            with db.transaction() as session:
                # Single use of each challenge, enforced here: the UPDATE commits with the
                # certificate, or (a refused build) with the others; one round trip for all.
                claimed = [slot for slot in batch if slot.claim is not None]
                if claimed:
                    refusals = consume_challenges_in(session, [cast(Claim, slot.claim) for slot in claimed])
                    for slot, refusal in zip(claimed, refusals, strict=True):
                        slot.error = refusal
                # Row locks before the log lock, the order revocation takes them in (certificate row,
                # then log lock), so an issuance and a revocation never wait on each other in a cycle.
                for slot in batch:
                    if slot.hold is not None and slot.error is None:
                        try:
                            slot.hold(session)
                        except Exception as exc:  # handed to that caller's thread, re-raised there
                            slot.error = exc
                start = lock_and_next_index(session)
                for slot in batch:
                    if slot.error is not None:
                        continue
                    try:
                        built.append((slot, slot.build(start + len(built))))
                    except Exception as exc:  # handed to that caller's thread, re-raised there
                        slot.error = exc
                if built:
                    _insert(session, start, [b for _, b in built])
        except Exception as exc:  # nothing of this batch committed: every caller in it fails
            for slot in batch:
                if slot.error is None:
                    slot.error = exc
        else:
            for slot, b in built:
                slot.result = b.result
        finally:
            with self._cond:
                for slot in batch:
                    slot.done = True
                self.batches += 1
                self.batched += len(built)


_EVIDENCE = RawInsert(cast(Table, EvidenceBlob.__table__), on_conflict_do_nothing="sha256")
_CERTIFICATES = RawInsert(cast(Table, Certificate.__table__))


def _insert(session: Session, start: int, items: list[Built]) -> None:
    """The batch's rows: evidence blobs (content-addressed, shared ones once), certificates, leaves."""
    blobs: dict[str, dict[str, Any]] = {}
    for b in items:
        for row in b.evidence:
            blobs.setdefault(row["sha256"], row)
    # prebuilt statements on the session's DBAPI cursor, not Core inserts: SQLAlchemy's statement
    # handling was most of this function's CPU (db/rawsql.py); on PostgreSQL the three INSERTs go
    # in one round trip
    append_leaves_at(session, start, [b.leaf for b in items],
                     along=[(_EVIDENCE, list(blobs.values())), (_CERTIFICATES, [b.certificate for b in items])])
