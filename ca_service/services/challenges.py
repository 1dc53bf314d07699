"""Single-use challenges (flow 1, step 1 and 4), and their purge.

A challenge lives ``CA_SERVICE_CHALLENGE_TTL_SECONDS``; once expired, used or not, it is deleted by
:func:`purge_expired`, which ``serve`` runs in every worker every
``CA_SERVICE_CHALLENGE_PURGE_INTERVAL_SECONDS`` (and ``ca-service db purge-challenges`` on demand).
The table therefore holds at most what was asked for within one TTL plus one interval, which the
per-client rate limit bounds further. A purged challenge presented later is ``challenge.unknown``
instead of ``challenge.expired``: refused either way.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import LargeBinary, bindparam, delete, select, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ca_service.db import rawsql
from ca_service.db.base import UTCDateTime
from ca_service.db.models import Challenge
from ca_service.errors import CAServiceError, ChallengeConsumed, ChallengeExpired, ChallengeUnknown

if TYPE_CHECKING:  # the container imports group_commit, which imports this module
    from ca_service.services.container import Services

log = logging.getLogger("ca_service.challenges")

NONCE_BYTES = 32
PURGE_BATCH = 5000

# On the issuance hot path: a textual statement skips the ORM's UPDATE bookkeeping (session
# synchronisation, statement construction and cache keys, ~1 ms of CPU an issuance; issue 15).
_CONSUME = text(
    "UPDATE challenges SET consumed_at = :now "
    "WHERE id = :id AND consumed_at IS NULL AND expires_at > :now RETURNING nonce"
).bindparams(bindparam("now", type_=UTCDateTime()))


_READ = text("SELECT nonce, consumed_at, expires_at FROM challenges WHERE id = :id").columns(
    nonce=LargeBinary(), consumed_at=UTCDateTime(), expires_at=UTCDateTime())


@dataclass(frozen=True)
class IssuedChallenge:
    id: str
    nonce: bytes
    expires_at: datetime


def create_challenge(svc: Services) -> IssuedChallenge:
    now = svc.clock.now()
    ch = IssuedChallenge(id=str(uuid.uuid4()), nonce=secrets.token_bytes(NONCE_BYTES),
                         expires_at=now + timedelta(seconds=svc.settings.challenge_ttl_seconds))
    with svc.db.transaction() as session:
        session.add(Challenge(id=ch.id, nonce=ch.nonce, created_at=now, expires_at=ch.expires_at))
    return ch


def _valid_id(challenge_id: str) -> None:
    try:
        uuid.UUID(challenge_id)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ChallengeUnknown("challenge id is not a known challenge") from exc


def valid_challenge_id(challenge_id: str) -> bool:
    """Whether ``challenge_id`` has the form of a challenge id (a UUID)."""
    try:
        _valid_id(challenge_id)
    except ChallengeUnknown:
        return False
    return True


def _why_not(session: Session, challenge_id: str) -> CAServiceError:
    """The refusal for a challenge that could not be used: unknown, used, or else expired."""
    row = session.execute(
        select(Challenge.consumed_at, Challenge.expires_at).where(Challenge.id == challenge_id)
    ).one_or_none()
    if row is None:
        return ChallengeUnknown("challenge id is not a known challenge")
    if row.consumed_at is not None:
        return ChallengeConsumed("challenge was already used")
    return ChallengeExpired("challenge expired; ask for a new one")


def consume_challenge_in(session: Session, challenge_id: str, now: datetime) -> bytes:
    """Atomically mark the challenge used, in the caller's transaction, and return its nonce.

    One conditional UPDATE ... RETURNING: of any number of concurrent requests for the same
    challenge exactly one sees a row (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite).

    Raises:
        ChallengeUnknown, ChallengeExpired, ChallengeConsumed (``challenge.*``).
    """
    _valid_id(challenge_id)
    nonce = session.execute(_CONSUME, {"id": challenge_id, "now": now}).scalar_one_or_none()
    if nonce is not None:
        return bytes(nonce)
    raise _why_not(session, challenge_id)


def read_challenge(session: Session, challenge_id: str, now: datetime) -> bytes:
    """The nonce of a challenge that is usable at ``now`` (known, unused, unexpired), without using
    it: the issuance uses it in its final transaction (:func:`consume_challenges_in`), which is
    what enforces single use; this read only lets a request verify its evidence against the nonce.

    Raises:
        ChallengeUnknown, ChallengeExpired, ChallengeConsumed (``challenge.*``).
    """
    _valid_id(challenge_id)
    row = session.execute(_READ, {"id": challenge_id}).one_or_none()
    if row is None:
        raise ChallengeUnknown("challenge id is not a known challenge")
    if row.consumed_at is not None:
        raise ChallengeConsumed("challenge was already used")
    if row.expires_at <= now:
        raise ChallengeExpired("challenge expired; ask for a new one")
    return bytes(row.nonce)


def use_up(svc: Services, challenge_id: str, now: datetime) -> None:
    """Mark a challenge used for a request refused before its final transaction (bad evidence,
    failed appraisal...): a refused request uses its challenge up too. Already used, expired or
    unknown: nothing to do."""
    try:
        with svc.db.transaction() as session:
            consume_challenge_in(session, challenge_id, now)
    except CAServiceError:
        pass


def consume_challenges_in(session: Session, claims: Sequence[tuple[str, datetime]]) -> list[CAServiceError | None]:
    """Use up each ``(challenge id, as of)`` in the caller's transaction (an issuance batch,
    services/group_commit.py): per claim, ``None`` when this transaction used it, else the refusal.

    Exactly one claim of any challenge succeeds, across batches and processes: on PostgreSQL the
    rows are locked in id order (``FOR UPDATE``; two batches that share a challenge cannot deadlock)
    and updated only where still unused and unexpired, in one round trip; a claim whose row did
    not change is refused. A second claim of the same id within ``claims`` is refused as used.
    """
    out: list[CAServiceError | None] = [None] * len(claims)
    first: dict[str, int] = {}
    for i, (cid, _at) in enumerate(claims):
        try:
            _valid_id(cid)
        except ChallengeUnknown as exc:
            out[i] = exc
            continue
        if cid in first:
            out[i] = ChallengeConsumed("challenge was already used")
        else:
            first[cid] = i
    if not first:
        return out
    if session.get_bind().dialect.name != "postgresql":
        # SQLite: the transaction began IMMEDIATE (db/session.py), writers are serialised already
        for cid, i in first.items():
            try:
                consume_challenge_in(session, cid, claims[i][1])
            except CAServiceError as exc:
                out[i] = exc
        return out
    ids = sorted(first)
    # only placeholders are joined into the text; every id and time is a bound parameter
    marks = ", ".join(["%s"] * len(ids))
    lock = f"SELECT id FROM challenges WHERE id IN ({marks}) ORDER BY id FOR UPDATE; "  # noqa: S608
    values = ", ".join(["(%s, %s::timestamptz)"] * len(ids))
    sql = lock + ("UPDATE challenges AS c SET consumed_at = v.at FROM (VALUES " + values  # noqa: S608
                  + ") AS v(id, at) WHERE c.id = v.id AND c.consumed_at IS NULL AND c.expires_at > v.at RETURNING c.id")
    params: list[Any] = [*ids]
    for cid in ids:
        params += [cid, claims[first[cid]][1].astimezone(UTC)]
    cursor = session.connection().connection.cursor()
    try:
        with rawsql.as_sqlalchemy_error(session.get_bind().dialect, sql):
            cursor.execute(sql, params)
            used = {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()
    for cid, i in first.items():
        if cid not in used:
            out[i] = _why_not(session, cid)
    return out


def purge_expired(svc: Services, *, now: datetime | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete every challenge that expired by ``now`` (default: the service clock), used or not, in
    batches of ``batch`` rows (short transactions: a purge never holds the table long). Returns how
    many were deleted. Safe to run from several workers and replicas at once."""
    at = now or svc.clock.now()
    total = 0
    while True:
        with svc.db.transaction() as session:
            # SKIP LOCKED: never wait for (or deadlock with) an issuance batch holding a row
            ids = (select(Challenge.id).where(Challenge.expires_at <= at).limit(batch)
                   .with_for_update(skip_locked=True).scalar_subquery())
            result: CursorResult[Any] = session.execute(delete(Challenge).where(Challenge.id.in_(ids)))  # type: ignore[assignment]
            deleted = result.rowcount or 0
        total += deleted
        if deleted < batch:
            return total


def start_purger(svc: Services, interval: float) -> tuple[threading.Thread, threading.Event]:
    """Run :func:`purge_expired` every ``interval`` seconds in a daemon thread (for ``serve``); set the
    event to stop it. A failure (the database is down) is logged in one line and retried."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                n = purge_expired(svc)
                if n:
                    log.info("purged %d expired challenge(s)", n, extra={"purged": n})
            except SQLAlchemyError as exc:  # the database is down or busy: one line, retried
                log.warning("challenge purge: database unavailable (%s)",
                            type(getattr(exc, "orig", None) or exc).__name__)
            except Exception:
                log.exception("challenge purge failed; retrying")

    thread = threading.Thread(target=loop, name="challenge-purger", daemon=True)
    thread.start()
    return thread, stop
