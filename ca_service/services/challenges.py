"""Single-use challenges (flow 1, step 1 and 4)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ca_service.db.models import Challenge
from ca_service.errors import ChallengeConsumed, ChallengeExpired, ChallengeUnknown
from ca_service.services.container import Services

NONCE_BYTES = 32


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


def consume_challenge_in(session: Session, challenge_id: str, now: datetime) -> bytes:
    """Atomically mark the challenge used, in the caller's transaction, and return its nonce.

    One conditional UPDATE ... RETURNING: of any number of concurrent requests for the same
    challenge exactly one sees a row (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite).

    Raises:
        ChallengeUnknown, ChallengeExpired, ChallengeConsumed (``challenge.*``).
    """
    try:
        uuid.UUID(challenge_id)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ChallengeUnknown("challenge id is not a known challenge") from exc
    nonce = session.execute(
        update(Challenge)
        .where(Challenge.id == challenge_id, Challenge.consumed_at.is_(None), Challenge.expires_at > now)
        .values(consumed_at=now)
        .returning(Challenge.nonce)
    ).scalar_one_or_none()
    if nonce is not None:
        return bytes(nonce)
    row = session.execute(
        select(Challenge.consumed_at, Challenge.expires_at).where(Challenge.id == challenge_id)
    ).one_or_none()
    if row is None:
        raise ChallengeUnknown("challenge id is not a known challenge")
    if row.consumed_at is not None:
        raise ChallengeConsumed("challenge was already used")
    raise ChallengeExpired("challenge expired; ask for a new one")
