"""Single-use challenges (flow 1, step 1 and 4), and their purge.

A challenge lives ``CA_SERVICE_CHALLENGE_TTL_SECONDS``; once expired, used or not, it is deleted by
:func:`purge_expired`, which ``serve`` runs in every worker every
``CA_SERVICE_CHALLENGE_PURGE_INTERVAL_SECONDS`` (and ``ca-service db purge-challenges`` on demand).
The table therefore holds at most what was asked for within one TTL plus one interval, which the
per-client rate limit bounds further. A purged challenge presented later is ``challenge.unknown``
instead of ``challenge.expired``: refused either way.
"""

from __future__ import annotations

import hashlib
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


# The nonce of a challenge is derived from its id (docs/adr/0007-challenge-nonce-derived-from-its-id.md):
# the id is 122 random bits from the CSPRNG, so the nonce is as fresh and unpredictable as a random one,
# and an issuance needs no read to learn it. Such ids are UUIDs of version 8 (RFC 9562's custom
# version); a version-4 id is a challenge made before, whose random nonce only its row knows.
_NONCE_CONTEXT = b"ca-service challenge nonce v1\0"


def derived_nonce(challenge_id: str) -> bytes:
    """The nonce of a challenge whose id is of the derived kind (:func:`has_derived_nonce`)."""
    return hashlib.sha256(_NONCE_CONTEXT + challenge_id.encode("ascii")).digest()


def _new_id() -> str:
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def has_derived_nonce(challenge_id: str) -> bool:
    """Whether ``challenge_id`` is a well-formed id whose nonce is :func:`derived_nonce` of it."""
    try:
        parsed = uuid.UUID(challenge_id)
    except (ValueError, AttributeError, TypeError):
        return False
    return parsed.version == 8 and str(parsed) == challenge_id


def create_challenge(svc: Services) -> IssuedChallenge:
    now = svc.clock.now()
    cid = _new_id()
    ch = IssuedChallenge(id=cid, nonce=derived_nonce(cid),
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


def _why_not(session: Session, challenge_id: str, at: datetime | None = None) -> Exception:
    """The refusal for a challenge that could not be used: unknown, used, or else expired; with
    ``at`` (a claim that expected a nonce and a policy version), :class:`PolicyMoved` when the
    challenge itself was still usable at ``at``."""
    row = session.execute(
        select(Challenge.consumed_at, Challenge.expires_at).where(Challenge.id == challenge_id)
    ).one_or_none()
    if row is None:
        return ChallengeUnknown("challenge id is not a known challenge")
    if row.consumed_at is not None:
        return ChallengeConsumed("challenge was already used")
    if at is not None and row.expires_at > at:
        return PolicyMoved("the policy's active version changed since it was read")
    return ChallengeExpired("challenge expired; ask for a new one")


_STILL_HOLDS = text(
    "SELECT c.nonce, pv.digest FROM challenges c, policies p JOIN policy_versions pv ON pv.name = p.name "
    "AND pv.version = p.active_version WHERE c.id = :id AND p.name = :policy AND p.active_version = :version"
).columns(nonce=LargeBinary())


def _still_holds(session: Session, challenge_id: str, expect: Expect) -> bool:
    """Whether the challenge holds the expected nonce and the policy's active version is the expected one."""
    row = session.execute(_STILL_HOLDS, {"id": challenge_id, "policy": expect.policy,
                                         "version": expect.version}).one_or_none()
    return row is not None and bytes(row.nonce) == expect.nonce and row.digest == expect.digest


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


class PolicyMoved(Exception):
    """A claim's appraisal was made under a policy version that is no longer the active one (or
    the challenge's row does not hold the nonce the evidence was checked against). The challenge
    was not used: the caller reads the policy again and appraises again (services/issuance.py).
    Never reaches a client: it is not a CAServiceError."""


@dataclass(frozen=True)
class Expect:
    """What an issuance assumed (services/issuance.py): the challenge's nonce and the active version
    of the policy it was appraised under. Its claim uses the challenge up only if both still hold,
    and the policy stays as it is until the claim's transaction commits."""

    nonce: bytes
    policy: str
    version: int
    digest: str


def consume_challenges_in(session: Session,
                          claims: Sequence[tuple[str, datetime] | tuple[str, datetime, Expect | None]],
                          ) -> list[Exception | None]:
    """Use up each ``(challenge id, as of[, expect])`` in the caller's transaction (an issuance
    batch, services/group_commit.py): per claim, ``None`` when this transaction used it, else the
    refusal.

    Exactly one claim of any challenge succeeds, across batches and processes: on PostgreSQL the
    rows are locked in id order (``FOR UPDATE``; two batches that share a challenge cannot deadlock)
    and updated only where still unused and unexpired, in one round trip; a claim whose row did
    not change is refused. A second claim of the same id within ``claims`` is refused as used. A
    claim with an :class:`Expect` also needs the row's nonce and the policy's active version to be
    the expected ones; where only that failed, its refusal is :class:`PolicyMoved` (unused). Those
    policy rows are then locked shared until COMMIT (PostgreSQL ``FOR SHARE``, after the challenge
    rows; SQLite's writer lock): no version is activated between the claim and the certificate.
    """
    out: list[Exception | None] = [None] * len(claims)
    first: dict[str, int] = {}
    expects: dict[str, Expect] = {}
    for i, claim in enumerate(claims):
        cid = claim[0]
        try:
            _valid_id(cid)
        except ChallengeUnknown as exc:
            out[i] = exc
            continue
        if cid in first:
            out[i] = ChallengeConsumed("challenge was already used")
            continue
        first[cid] = i
        expect = claim[2] if len(claim) > 2 else None
        if expect is not None:  # the first claim of an id is the one that may use it
            expects[cid] = expect
    if not first:
        return out
    if session.get_bind().dialect.name != "postgresql":
        # SQLite: the transaction began IMMEDIATE (db/session.py), writers are serialised already:
        # what is read here stays so until COMMIT
        for cid, i in first.items():
            expect = expects.get(cid)
            try:
                if expect is not None and not _still_holds(session, cid, expect):
                    out[i] = _why_not(session, cid, claims[i][1])
                    continue
                consume_challenge_in(session, cid, claims[i][1])
            except CAServiceError as exc:
                out[i] = exc
        return out
    ids = sorted(first)
    # only placeholders are joined into the text; every id and time is a bound parameter
    marks = ", ".join(["%s"] * len(ids))
    lock = f"SELECT id FROM challenges WHERE id IN ({marks}) ORDER BY id FOR UPDATE; "  # noqa: S608
    names = sorted({e.policy for e in expects.values()})
    if names:
        # The policy rows too, shared: an activation (which updates the row) waits for this batch's
        # COMMIT, and one that committed before is seen by the UPDATE below (a statement of its own,
        # so a snapshot of its own): what the claim checks still holds when the certificate commits.
        lock += ("SELECT name FROM policies WHERE name IN (" + ", ".join(["%s"] * len(names))  # noqa: S608
                 + ") ORDER BY name FOR SHARE; ")
    values = ", ".join(["(%s, %s::timestamptz, %s::bytea, %s::text, %s::integer, %s::text)"] * len(ids))
    sql = lock + ("UPDATE challenges AS c SET consumed_at = v.at FROM (VALUES " + values  # noqa: S608
                  + ") AS v(id, at, nonce, policy, version, digest) WHERE c.id = v.id AND c.consumed_at IS NULL "
                  "AND c.expires_at > v.at AND (v.policy IS NULL OR (c.nonce = v.nonce AND EXISTS ("
                  "SELECT 1 FROM policies p JOIN policy_versions pv ON pv.name = p.name AND pv.version = "
                  "p.active_version WHERE p.name = v.policy AND p.active_version = v.version "
                  "AND pv.digest = v.digest))) RETURNING c.id")
    params: list[Any] = [*ids, *names]
    for cid in ids:
        e = expects.get(cid)
        params += [cid, claims[first[cid]][1].astimezone(UTC), *((e.nonce, e.policy, e.version, e.digest) if e else
                                                                  (None, None, None, None))]
    cursor = session.connection().connection.cursor()
    try:
        with rawsql.as_sqlalchemy_error(session.get_bind().dialect, sql):
            cursor.execute(sql, params)
            used = {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()
    for cid, i in first.items():
        if cid not in used:
            out[i] = _why_not(session, cid, claims[i][1]) if cid in expects else _why_not(session, cid)
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
