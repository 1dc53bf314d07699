"""Bearer-token authentication and role checks for the admin plane.

``Authorization: Bearer <token>`` (RFC 6750). No or unknown/expired/revoked token: 401 with a
``WWW-Authenticate`` challenge; a valid token whose role is not enough: 403. Roles: ``admin``
may do everything, ``auditor`` may read policies and the audit log. Public material (CA chain,
CRL, OCSP, log, anchors, JWKS, attestations) takes no token at all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, g, request

from ca_service.api.context import services
from ca_service.errors import RoleForbidden, TokenInvalid, Unauthorized
from ca_service.services.tokens import Principal, authenticate

F = TypeVar("F", bound=Callable[..., Any])

ADMIN = frozenset({"admin"})
READERS = frozenset({"admin", "auditor"})


def current_principal(roles: frozenset[str]) -> Principal:
    """Authenticate the request and check its role.

    Raises:
        Unauthorized leaves (401: ``auth.unauthorized``, ``auth.token_invalid``, ``auth.token_expired``,
        ``auth.token_revoked``), RoleForbidden (403, ``auth.role_forbidden``).
    """
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("this route needs a bearer token")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise TokenInvalid("use the Bearer scheme: Authorization: Bearer <token>")
    principal = authenticate(services(), secret.strip())
    if principal.role not in roles:
        raise RoleForbidden(f"role {principal.role!r} may not do this; needs {' or '.join(sorted(roles))}",
                            role=principal.role, required=sorted(roles))
    g.principal = principal
    return principal


def require_role(roles: frozenset[str]) -> Callable[[F], F]:
    """View decorator: authenticate, check the role, expose the caller as ``flask.g.principal``."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            current_principal(roles)
            return view(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def principal() -> Principal:
    p: Principal = g.principal
    return p


def www_authenticate(resp: Response) -> Response:
    """``after_request`` hook for admin blueprints: the RFC 6750 challenge on every 401."""
    if resp.status_code == 401 and "WWW-Authenticate" not in resp.headers:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ca-service"'
    return resp
