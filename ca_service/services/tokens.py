"""API bearer tokens: create, revoke, list, authenticate.

A token is 32 random bytes shown once as ``cas_<base64url>``; the table keeps only its SHA-256.
Authentication hashes the presented secret and compares digests with ``hmac.compare_digest``
(STYLE.md 9), so neither the lookup nor the comparison leaks the secret through timing; the
lookup itself is by digest, which an attacker cannot steer toward a stored one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from ca_service.db.models import ApiToken
from ca_service.errors import NotFound, RequestError, TokenExpired, TokenInvalid, TokenRevoked
from ca_service.services import audit
from ca_service.services.container import Services

ROLES = ("admin", "auditor")
# what `ca-service token create` gives when no --expires-in is asked for; `never` must be explicit
DEFAULT_LIFETIME = timedelta(days=90)
DEFAULT_LIFETIME_TEXT = "90d"
TOKEN_PREFIX = "cas_"  # noqa: S105 - a public prefix, not a secret
_MAX_TOKEN_CHARS = 128


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id, name and role."""

    token_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        """The audit/log actor: ``token:<id>:<name>`` (safe characters only)."""
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in self.name)[:40]
        return f"token:{self.token_id}:{safe}"


@dataclass(frozen=True)
class CreatedToken:
    id: int
    name: str
    role: str
    secret: str
    expires_at: datetime | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(svc: Services, *, role: str, name: str, expires_in: timedelta | None, actor: str) -> CreatedToken:
    """Create a token; the secret is returned once and never stored.

    ``expires_in`` has no default: ``None`` is a token that never expires, and callers ask for it by
    name (the CLI's default is :data:`DEFAULT_LIFETIME`, ``--expires-in never`` for ``None``).
    """
    if role not in ROLES:
        raise RequestError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise RequestError("token name must be 1..64 characters")
    if expires_in is not None and expires_in <= timedelta(0):
        raise RequestError("expiry must be in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = svc.clock.now()
    expires_at = now + expires_in if expires_in is not None else None
    with svc.db.transaction() as session:
        row = ApiToken(name=name, role=role, token_sha256=_digest(secret), created_at=now, expires_at=expires_at)
        session.add(row)
        session.flush()
        audit.record(session, at=now, actor=actor, action="token.create", target=f"token:{row.id}",
                     detail={"name": name, "role": role,
                             "expires_at": expires_at.isoformat() if expires_at else None})
        token_id = row.id
    return CreatedToken(token_id, name, role, secret, expires_at)


def revoke_token(svc: Services, token_id: int, *, actor: str) -> bool:
    """Revoke a token. Returns False when it was already revoked.

    Raises:
        NotFound (``not_found``): no such token.
    """
    now = svc.clock.now()
    with svc.db.transaction() as session:
        row = session.get(ApiToken, token_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        if row.revoked_at is not None:
            return False
        row.revoked_at = now
        audit.record(session, at=now, actor=actor, action="token.revoke", target=f"token:{token_id}",
                     detail={"name": row.name, "role": row.role})
    return True


def list_tokens(svc: Services) -> list[dict[str, object]]:
    with svc.db.read() as session:
        rows = session.execute(select(ApiToken).order_by(ApiToken.id)).scalars().all()
        return [{"id": r.id, "name": r.name, "role": r.role, "created_at": r.created_at.isoformat(),
                 "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                 "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None} for r in rows]


def authenticate(svc: Services, secret: str) -> Principal:
    """The principal a presented bearer secret stands for.

    Raises:
        TokenInvalid (``auth.token_invalid``), TokenExpired (``auth.token_expired``),
        TokenRevoked (``auth.token_revoked``): all 401.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > _MAX_TOKEN_CHARS:
        raise TokenInvalid("the bearer token is not one this service issued")
    digest = _digest(secret)
    with svc.db.read() as session:
        row = session.execute(select(ApiToken).where(ApiToken.token_sha256 == digest)).scalar_one_or_none()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            raise TokenInvalid("the bearer token is not one this service issued")
        if row.revoked_at is not None:
            raise TokenRevoked("the bearer token has been revoked")
        if row.expires_at is not None and row.expires_at <= svc.clock.now():
            raise TokenExpired("the bearer token has expired")
        return Principal(token_id=row.id, name=row.name, role=row.role)
