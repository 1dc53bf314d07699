"""Abuse (issue 11 section 7): challenges expire and are purged, tokens expire by default, the EAR
carries ``exp``. Driven over HTTP against ``ca-service serve`` (SQLite, or PostgreSQL with
``CA_SERVICE_TEST_DATABASE=postgres``) and through the Python entry points."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from sqlalchemy import create_engine, func, select, text

from ca_service.db.models import Challenge
from ca_service.errors import ChallengeUnknown
from ca_service.services.challenges import consume_challenge_in, create_challenge, purge_expired
from tests.conftest import Issuer
from tests.integration.test_serve_faults import _free_port, _wait_ready

CLI = [sys.executable, "-m", "ca_service.cli"]
TTL = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("abuse")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_CHALLENGE_TTL_SECONDS": str(TTL),
           "CA_SERVICE_CHALLENGE_PURGE_INTERVAL_SECONDS": "1"}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--publish-interval", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield {"url": url, "env": env, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _rows(env: dict[str, str]) -> int:
    engine = create_engine(env["CA_SERVICE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM challenges")).scalar_one())
    finally:
        engine.dispose()


class _Http:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path, json=None):
        r = requests.post(self.url + path, json=json, timeout=30)
        r.get_json = r.json
        return r


def _issuer(server) -> Issuer:
    from ca_service.config import Settings
    from ca_service.services.bootstrap import load_sim_tee

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(Settings(home=server["home"]))
    return Issuer(_Http(server["url"]), tee)


def test_expired_challenges_are_purged_and_the_table_stays_bounded(server):
    url, env = server["url"], server["env"]
    issued = [requests.post(f"{url}/v1/challenges", timeout=10).json() for _ in range(60)]
    assert all(c["id"] for c in issued)
    assert _rows(env) >= 1
    # every worker purges every second; TTL 1 s: within a few seconds the table is empty again
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _rows(env) > 0:
        time.sleep(0.5)
    assert _rows(env) == 0
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert "ca_service_challenges 0.0" in metrics
    # a purged challenge is refused like any unknown one
    iss = _issuer(server)
    body, _ = iss.body(challenge=issued[0])
    r = requests.post(f"{url}/v1/certificates", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "challenge.unknown"
    assert r.headers["Content-Type"] == "application/problem+json"
    # a steady flood of 160 only ever holds about one TTL plus one purge interval worth of rows
    # (~40 here; without the purge all 160 would stay)
    peak = 0
    for _ in range(8):
        for _ in range(20):
            requests.post(f"{url}/v1/challenges", timeout=10)
        peak = max(peak, _rows(env))
        time.sleep(1.0)
    assert 0 < peak <= 100


def test_ear_exp_is_the_certificates_not_after_and_the_jwts_is_bounded(server):
    url = server["url"]
    iss = _issuer(server)
    body, _ = iss.body()
    r = requests.post(f"{url}/v1/certificates", json=body, timeout=60)
    assert r.status_code == 201, r.text
    out = r.json()
    leaf = x509.load_pem_x509_certificates(out["certificate_chain"].encode())[0]
    assert out["ear"]["exp"] == int(leaf.not_valid_after_utc.timestamp())
    assert out["ear"]["exp"] > out["ear"]["iat"]
    # POST /v1/attestations: the EAR JWT has exp, and a stock JWT library enforces it
    nonce = os.urandom(32)
    att = requests.post(f"{url}/v1/attestations", timeout=60, json={
        "policy": "sim", "eat_nonce": nonce.hex(),
        "evidence": [{"type": "sim", "data": base64.b64encode(iss.tee.report(nonce + bytes(32))).decode()}]})
    assert att.status_code == 200, att.text
    token = att.json()["ear"]
    jwks = requests.get(f"{url}/.well-known/jwks.json", timeout=10).json()
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"])).key
    claims = jwt.decode(token, key=key, algorithms=["ES256"], options={"require": ["exp", "iat"]})
    lifetime = claims["exp"] - claims["iat"]
    # what a certificate on this evidence gets: the sim policy's certificate.max_lifetime (no collateral)
    assert 0 < lifetime <= 30 * 86400
    assert lifetime == out["ear"]["exp"] - out["ear"]["iat"]
    with pytest.raises(jwt.ExpiredSignatureError):
        # as a relying party would judge it one second after exp (negative leeway moves "now" on)
        jwt.decode(token, key=key, algorithms=["ES256"], leeway=-(lifetime + 1), options={"verify_iat": False})


def test_tokens_expire_by_default_and_never_is_asked_for(server):
    url, env = server["url"], server["env"]

    def create(*args: str) -> dict:
        p = subprocess.run([*CLI, "token", "create", "--role", "auditor", "--json", *args], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    default = create()
    expires = datetime.fromisoformat(default["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert create("--expires-in", "never")["expires_at"] is None
    bad = subprocess.run([*CLI, "token", "create", "--role", "auditor", "--expires-in", "forever"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "nor 'never'" in bad.stderr
    # a short-lived token works, then is refused with a problem, like a stolen one that aged out
    for lifetime in (8, 30, 120):  # a longer one only when a loaded machine's CLI exit ate most of it
        short = create("--expires-in", f"{lifetime}s")
        auth = {"Authorization": f"Bearer {short['token']}"}
        if (datetime.fromisoformat(short["expires_at"]) - datetime.now(UTC)).total_seconds() > 3:
            break
    assert requests.get(f"{url}/v1/policies", headers=auth, timeout=10).status_code == 200
    left = (datetime.fromisoformat(short["expires_at"]) - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, left) + 0.5)
    r = requests.get(f"{url}/v1/policies", headers=auth, timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "auth.token_expired"
    assert r.headers["Content-Type"] == "application/problem+json" and "Bearer" in r.headers["WWW-Authenticate"]


# --- the Python entry points ------------------------------------------------------------------------


def test_purge_expired_python_api(services):
    mine = [create_challenge(services) for _ in range(25)]
    later = max(c.expires_at for c in mine) + timedelta(seconds=1)
    # purging as of now keeps the live ones
    purge_expired(services)
    with services.db.read() as session:
        kept = session.execute(select(func.count()).select_from(Challenge)
                               .where(Challenge.id.in_([c.id for c in mine]))).scalar_one()
    assert kept == 25
    # as of after their expiry, every expired row goes (in batches), used or not
    with services.db.transaction() as session:
        consume_challenge_in(session, mine[0].id, mine[0].expires_at - timedelta(seconds=5))
    assert purge_expired(services, now=later, batch=7) >= 25
    with services.db.read() as session:
        left = session.execute(select(func.count()).select_from(Challenge)
                               .where(Challenge.expires_at <= later)).scalar_one()
    assert left == 0
    with services.db.transaction() as session, pytest.raises(ChallengeUnknown):
        consume_challenge_in(session, mine[1].id, later)


def test_token_cli_default_expiry(ca_settings, monkeypatch):
    from ca_service.cli.main import cli

    monkeypatch.setenv("CA_SERVICE_HOME", str(ca_settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", ca_settings.database_url)
    monkeypatch.setenv("CA_SERVICE_PROFILE", ca_settings.profile)
    res = CliRunner().invoke(cli, ["token", "create", "--role", "admin"], catch_exceptions=False)
    assert res.exit_code == 0
    assert "expires never" not in res.output and "expires 20" in res.output
    res = CliRunner().invoke(cli, ["token", "create", "--role", "admin", "--expires-in", "NEVER"])
    assert res.exit_code == 0 and "expires never" in res.output
    assert "never" in CliRunner().invoke(cli, ["token", "create", "--help"]).output


def test_attestation_exp_python_api(services, sim_tee):
    from ca_service.ca.lifetime import result_expiry
    from ca_service.services import policies
    from ca_service.services.attestation import AttestationRequest, attest
    from ca_service.services.issuance import EvidenceItem

    nonce = os.urandom(32)
    res = attest(services, AttestationRequest(policy="sim", evidence=(EvidenceItem("sim", sim_tee.report(nonce)),),
                                              nonce=nonce))
    with services.db.read() as session:
        ref = policies.active_policy(session, "sim")
    assert res.claims["exp"] - res.claims["iat"] == int(ref.policy.max_lifetime.total_seconds())
    # capped by collateral (plus the policy grace), never before now
    now = datetime(2026, 1, 1, tzinfo=UTC)
    soon = {"tcb_info": now + timedelta(hours=2)}
    assert result_expiry(ref.policy, now, [soon]) == min(now + ref.policy.max_lifetime, now + timedelta(hours=2))
    assert result_expiry(ref.policy, now, [{"crl": now - timedelta(days=3)}]) == now
