"""Database faults on a PostgreSQL cluster of our own (never the shared one): down, frozen, and a
replica that holds the log's sequencing lock and then stalls. Each is survived without a restart:
clients get 503 problem+json with Retry-After (never 500 internal), the log gets one line per
failure, and requests succeed again once the fault is gone."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import warnings

import pytest
from sqlalchemy import func, select

from tests.conftest import Issuer, make_settings
from tests.integration.pg_cluster import LOG_LOCK_HOLDER, Cluster, pg_cluster  # noqa: F401

# small timeouts keep the test bounded; the defaults are checked in test_default_timeouts_are_sane
FAST = {"db_lock_timeout_ms": 700, "db_statement_timeout_ms": 1500, "db_idle_in_transaction_timeout_ms": 2000,
        "db_connect_timeout_seconds": 2}


@pytest.fixture(scope="module")
def ca(pg_cluster: Cluster, tmp_path_factory):  # noqa: F811
    from ca_service.api.app import create_app
    from ca_service.services.bootstrap import init_ca, load_sim_tee
    from ca_service.services.container import Services

    settings = make_settings(tmp_path_factory.mktemp("home"), pg_cluster.url, **FAST)
    init_ca(settings)
    svc = Services.create(settings)
    app = create_app(services=svc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(settings)
    yield {"svc": svc, "app": app, "tee": tee, "settings": settings, "cluster": pg_cluster}
    svc.close()


def _is_503(resp) -> str:
    assert resp.status_code == 503, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/problem+json"
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.get_json()
    assert body["type"].endswith(body["code"])
    return str(body["code"])


def _count(svc) -> int:
    from ca_service.db.models import Certificate

    with svc.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)


def test_default_timeouts_are_sane():
    from ca_service.config import Settings
    from ca_service.db.session import DbTimeouts

    s = Settings.from_env({"CA_SERVICE_DB_LOCK_TIMEOUT_MS": "1234"})
    assert s.db_lock_timeout_ms == 1234
    t = DbTimeouts()
    # a dead lock holder is cut off within seconds; waiters give up first; the client deadline
    # outlasts any statement the server lets run
    assert t.idle_in_transaction_ms <= 10_000 and t.lock_ms <= t.idle_in_transaction_ms
    assert t.client_s > t.statement_ms / 1000 and t.client_s <= 15


def test_database_down_is_503_then_recovers(ca, caplog):
    client = ca["app"].test_client()
    issuer = Issuer(client, ca["tee"])
    assert issuer.issue().status_code == 201
    before = _count(ca["svc"])
    # its challenge asked for before the outage: the issuance's pre-read (an autocommit pooled
    # connection, not a session) meets the dead server
    pending, _ = issuer.body()
    ca["cluster"].stop()
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ca_service.api"):
            codes = [_is_503(client.get("/v1/log/checkpoint")), _is_503(client.post("/v1/challenges")),
                     _is_503(client.get("/v1/anchors")), _is_503(client.post("/v1/certificates", json=pending))]
        assert set(codes) == {"service.database_unavailable"}
        assert client.get("/healthz").status_code == 200
        # one line per failure, no traceback
        lines = [r for r in caplog.records if r.name == "ca_service.api"]
        assert len(lines) == 4 and all(r.exc_info is None for r in lines)
        assert all("database unavailable" in r.getMessage() for r in lines)
    finally:
        ca["cluster"].start()
    # recovery without a restart: the pool drops dead connections and reconnects
    deadline = time.time() + 20
    while client.get("/v1/log/checkpoint").status_code == 503 and time.time() < deadline:
        time.sleep(0.2)
    assert issuer.issue().status_code == 201
    # the refused request's challenge was not used up (nothing reached the server): it issues now
    assert client.post("/v1/certificates", json=pending).status_code == 201
    assert _count(ca["svc"]) == before + 2


def test_frozen_database_fails_fast_and_healthz_answers(ca):
    client = ca["app"].test_client()
    issuer = Issuer(client, ca["tee"])
    assert issuer.issue().status_code == 201
    pids = ca["cluster"].freeze()
    try:
        assert client.get("/healthz").status_code == 200
        t0 = time.monotonic()
        code = _is_503(client.get("/v1/log/checkpoint"))
        took = time.monotonic() - t0
        assert code == "service.database_unavailable"
        # the client deadline (statement timeout + 2 s), plus a reconnect attempt bounded the same way
        assert took < 2 * ca["svc"].db.timeouts.client_s + 2, took
    finally:
        ca["cluster"].thaw(pids)
    deadline = time.time() + 20
    while client.get("/v1/log/checkpoint").status_code == 503 and time.time() < deadline:
        time.sleep(0.2)
    assert issuer.issue().status_code == 201




def test_stalled_lock_holder_is_cut_off_and_issuance_carries_on(ca):
    """A replica takes the log's sequencing lock and is paused (SIGSTOP) mid-transaction: the
    others fail fast with 503 service.database_busy, and within seconds the server ends the stalled
    session, so issuance carries on with a dense log."""
    from ca_service.services.log import publish_checkpoint

    client = ca["app"].test_client()
    issuer = Issuer(client, ca["tee"])
    before = _count(ca["svc"])
    # the first request is built (challenge, key, CSR, evidence) before the lock is taken: the server
    # cuts the holder off 2 s after it locked, and on a loaded box building it inside that window too
    # could let the request reach the lock after the cut-off (a 201, not the 503 under test)
    body, _ = issuer.body()
    holder = subprocess.Popen([sys.executable, "-c", LOG_LOCK_HOLDER, ca["settings"].database_url],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        holder.send_signal(19)  # SIGSTOP: a paused replica holding the lock
        t0 = time.monotonic()
        resp = client.post("/v1/certificates", json=body)
        assert _is_503(resp) == "service.database_busy"
        assert time.monotonic() - t0 < 5
        # the server cuts the idle-in-transaction holder off after 2 s (FAST); then issuance goes on
        deadline = time.monotonic() + 15
        ok = 0
        while time.monotonic() < deadline and ok < 3:
            r = issuer.issue()
            if r.status_code == 201:
                ok += 1
            else:
                assert _is_503(r) == "service.database_busy"
                time.sleep(0.2)
        assert ok == 3, "issuance did not resume after the stalled holder was cut off"
        assert time.monotonic() - t0 < 8
    finally:
        holder.send_signal(18)  # SIGCONT
        holder.kill()
        holder.wait(timeout=10)
    assert _count(ca["svc"]) == before + 3
    cp = publish_checkpoint(ca["svc"])
    from ca_service.db.models.tlog import TlogEntry

    with ca["svc"].db.read() as s:
        idx = list(s.scalars(select(TlogEntry.idx).order_by(TlogEntry.idx)))
    assert idx == list(range(len(idx))) and cp is not None and cp.size == len(idx)
