"""The admin plane: every admin route with no token, a wrong token, an expired token, a revoked
token and the wrong role; public routes with none. 401 vs 403 problems with stable codes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from ca_service.db.models import ApiToken
from ca_service.services import tokens

# (method, path, json body, roles allowed). The sim policy exists from `init` in insecure-dev.
ADMIN_ROUTES = [
    ("POST", "/v1/policies", {"name": "x"}, {"admin"}),
    ("GET", "/v1/policies", None, {"admin", "auditor"}),
    ("GET", "/v1/policies/sim", None, {"admin", "auditor"}),
    ("GET", "/v1/policies/sim/versions/1", None, {"admin", "auditor"}),
    ("GET", "/v1/policies/sim/diff?from=1", None, {"admin", "auditor"}),
    ("POST", "/v1/policies/sim/versions/1/activate", None, {"admin"}),
    ("POST", "/v1/policies/sim/versions/999/retire", {"revoke": False}, {"admin"}),
    ("POST", "/v1/policies/sim/dry-run", {"limit": 1}, {"admin"}),
    ("GET", "/v1/audit", None, {"admin", "auditor"}),
]


@pytest.fixture(scope="module")
def creds(services):
    def make(role: str, **kw):
        return tokens.create_token(services, role=role, name=f"{role}-{uuid.uuid4().hex[:6]}", actor="test", **kw)

    admin = make("admin", expires_in=timedelta(hours=1))
    auditor = make("auditor", expires_in=None)
    revoked = make("admin", expires_in=None)
    tokens.revoke_token(services, revoked.id, actor="test")
    expired_secret = tokens.TOKEN_PREFIX + uuid.uuid4().hex
    now = services.clock.now()
    with services.db.transaction() as session:
        session.add(ApiToken(name="expired", role="admin", token_sha256=tokens._digest(expired_secret),
                             created_at=now - timedelta(days=2), expires_at=now - timedelta(seconds=1)))
    return {"admin": admin.secret, "auditor": auditor.secret, "revoked": revoked.secret, "expired": expired_secret}


def _call(client, method, path, body, secret=None, header=None):
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return client.open(path, method=method, json=body, headers=headers)


def _problem(resp, status, code):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["code"] == code and body["status"] == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    return body


def test_every_admin_route_is_listed(app):
    listed = {(m, p.split("?")[0]) for m, p, _, _ in ADMIN_ROUTES}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/v1/policies", "/v1/audit")):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                concrete = (rule.rule.replace("<name>", "sim").replace("<int:version>", "1"))
                assert any(m == method and (p == concrete or p.replace("999", "1") == concrete)
                           for m, p in listed), f"{method} {rule.rule} has no auth test"


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ADMIN_ROUTES])
def test_refusals(client, creds, route):
    method, path, body, _ = route
    _problem(_call(client, method, path, body), 401, "auth.unauthorized")
    _problem(_call(client, method, path, body, secret="cas_" + "A" * 43), 401, "auth.token_invalid")
    _problem(_call(client, method, path, body, secret="not-even-ours"), 401, "auth.token_invalid")
    _problem(_call(client, method, path, body, header=f"Basic {creds['admin']}"), 401, "auth.token_invalid")
    _problem(_call(client, method, path, body, header="Bearer "), 401, "auth.token_invalid")
    _problem(_call(client, method, path, body, secret=creds["expired"]), 401, "auth.token_expired")
    _problem(_call(client, method, path, body, secret=creds["revoked"]), 401, "auth.token_revoked")


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ADMIN_ROUTES])
def test_roles(client, creds, route):
    method, path, body, roles = route
    for role in ("admin", "auditor"):
        resp = _call(client, method, path, body, secret=creds[role])
        if role in roles:
            # authorised: whatever the route then says, it is not an auth refusal
            assert resp.status_code not in (401, 403), resp.get_json()
        else:
            body_ = _problem(resp, 403, "auth.role_forbidden")
            assert body_["required"] == ["admin"] and body_["role"] == role


def test_public_routes_need_no_token(client):
    assert client.get("/.well-known/jwks.json").status_code == 200
    assert client.get("/v1/ca/chain").status_code == 200
    resp = client.post("/v1/attestations", json={"policy": "sim", "evidence": []})
    assert resp.status_code == 422 and resp.get_json()["code"] == "request.schema"


def test_token_secret_is_never_stored(services, creds):
    from sqlalchemy import select

    with services.db.read() as session:
        stored = session.execute(select(ApiToken.token_sha256)).scalars().all()
    assert creds["admin"] not in stored and tokens._digest(creds["admin"]) in stored


def test_token_lifecycle_is_audited(services, client, creds):
    created = tokens.create_token(services, role="auditor", name="lifecycle", expires_in=None, actor="cli:ops")
    assert client.get("/v1/audit", headers={"Authorization": f"Bearer {created.secret}"}).status_code == 200
    assert tokens.revoke_token(services, created.id, actor="cli:ops") is True
    assert tokens.revoke_token(services, created.id, actor="cli:ops") is False
    resp = client.get(f"/v1/audit?target=token:{created.id}", headers={"Authorization": f"Bearer {creds['auditor']}"})
    actions = [(e["action"], e["actor"]) for e in resp.get_json()["events"]]
    assert actions == [("token.revoke", "cli:ops"), ("token.create", "cli:ops")]


def test_token_create_refuses_bad_input(services):
    from ca_service.errors import RequestError

    with pytest.raises(RequestError):
        tokens.create_token(services, role="root", name="x", expires_in=None, actor="t")
    with pytest.raises(RequestError):
        tokens.create_token(services, role="admin", name="x", expires_in=timedelta(0), actor="t")
