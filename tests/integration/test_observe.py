"""Observability: one set of metrics across workers (multiprocess mode set up by `serve`), the
state gauges, /readyz naming what is degraded, JSON logs keeping `extra` fields and a request id."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta

import requests

from ca_service.services.opstate import OpsState
from tests.integration.ports import free_port as _free_port

CLI = [sys.executable, "-m", "ca_service.cli"]


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m is not None, f"{name}{labels} not in metrics"
    return float(m.group(1))


def test_metrics_are_one_set_across_workers(tmp_path, db_url_factory):
    home = tmp_path / "home"
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory()}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert subprocess.run([*CLI, "init"], env=env, capture_output=True, timeout=120).returncode == 0
    stale = home / "prometheus" / "counter_999999.db"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"stale")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "3"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert not stale.exists()  # cleaned at start
        for _ in range(4):
            assert requests.post(f"{url}/v1/challenges", timeout=5).status_code == 201
        label = '{method="POST",route="/v1/challenges",status="201"}'
        seen = {_metric(requests.get(f"{url}/metrics", timeout=5).text, "ca_service_http_requests_total", label)
                for _ in range(8)}
        assert seen == {4.0}  # every scrape, whichever worker answers, counts all workers
        text = requests.get(f"{url}/metrics", timeout=5).text
        assert _metric(text, "ca_service_challenges") >= 4
        assert _metric(text, "ca_service_database_up") == 1
        for name in ("ca_service_log_size", "ca_service_checkpoint_size"):
            assert _metric(text, name) >= 0
        assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_readyz_degraded_names_the_stuck_duty():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fine = OpsState(now=now, log_size=10, checkpoint_size=10, checkpoint_age_seconds=900.0, anchored_size=10,
                    anchor_lag_leaves=0, anchor_lag_seconds=0.0, challenges=0)
    assert fine.degraded(60, anchoring=True) == []  # old but nothing waits: not stuck
    stuck = OpsState(now=now, log_size=15, checkpoint_size=10, checkpoint_age_seconds=600.0, anchored_size=2,
                     anchor_lag_leaves=8, anchor_lag_seconds=900.0, challenges=0,
                     collateral_expiry_seconds={("tcb", "00906ED50000"): -timedelta(hours=1).total_seconds()})
    out = stuck.degraded(60, anchoring=True)
    assert len(out) == 2 and out[0].startswith("checkpointing: 5 entries") and out[1].startswith("anchoring: 8 leaves")
    assert stuck.degraded(60, anchoring=False) == out[:1]


def test_json_logs_keep_extra_fields_and_request_id(client, caplog):
    from ca_service.logs import JsonFormatter

    resp = client.get("/v1/log/entries/999999999", headers={"X-Request-Id": "req-abc-123"})
    assert resp.headers["X-Request-Id"] == "req-abc-123"
    auto = client.get("/healthz").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", auto)
    rec = logging.LogRecord("ca_service.x", logging.INFO, __file__, 1, "published %s", ("cp",), None)
    rec.size = 12
    rec.root = "ab" * 32
    rec.request_id = "req-abc-123"
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["msg"] == "published cp" and doc["size"] == 12 and doc["root"] == "ab" * 32
    assert doc["request_id"] == "req-abc-123"


def test_readyz_and_gauges_over_the_api_when_checkpointing_is_stuck(tmp_path, db_url_factory):
    """The app's own /readyz and /metrics, not OpsState by hand: an entry waits behind a checkpoint
    older than the threshold (the CA's clock moved on, nobody published): degraded, naming it, with
    the age and lag on /metrics; once published, ready again."""
    from dataclasses import dataclass

    from ca_service.api.app import create_app
    from ca_service.services.bootstrap import init_ca, load_sim_tee
    from ca_service.services.container import Services
    from ca_service.services.log import publish_checkpoint
    from ca_service.services.opstate import CHECKPOINT_STUCK_SECONDS
    from tests.conftest import Issuer, make_settings

    @dataclass
    class Clock:
        at: datetime

        def now(self) -> datetime:
            return self.at

    settings = make_settings(tmp_path / "home", db_url_factory())
    init_ca(settings)
    clock = Clock(datetime.now(UTC))
    svc = Services.create(settings, clock=clock)
    try:
        http = create_app(services=svc).test_client()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            issuer = Issuer(http, load_sim_tee(settings))
        assert issuer.issue().status_code == 201
        cp = publish_checkpoint(svc)
        assert cp is not None
        assert http.get("/readyz").get_json()["status"] == "ready"
        assert issuer.issue().status_code == 201      # one entry more, not published
        clock.at += timedelta(seconds=CHECKPOINT_STUCK_SECONDS + 30)
        r = http.get("/readyz")
        assert r.status_code == 200                   # degraded, still serving
        doc = r.get_json()
        assert doc["status"] == "degraded", doc
        assert len(doc["degraded"]) == 1 and doc["degraded"][0].startswith("checkpointing: 1 entries unpublished")
        text = http.get("/metrics").get_data(as_text=True)
        assert _metric(text, "ca_service_log_size") == cp.size + 1
        assert _metric(text, "ca_service_checkpoint_size") == cp.size
        assert _metric(text, "ca_service_checkpoint_age_seconds") >= CHECKPOINT_STUCK_SECONDS + 30
        assert re.search(r"^# TYPE ca_service_collateral_expiry_seconds gauge$", text, re.M)
        assert _metric(text, "ca_service_challenges") >= 2
        assert publish_checkpoint(svc).size == cp.size + 1
        assert http.get("/readyz").get_json()["status"] == "ready"
    finally:
        svc.close()
