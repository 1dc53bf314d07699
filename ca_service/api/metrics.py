"""Prometheus metrics at /metrics: request counts and latency by route, refusals by stable code,
and the service's state read from the database at scrape time (log size, checkpoint age, anchor
lag, collateral expiry, challenges: the same from every worker and replica).

``ca-service serve`` sets up prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
its own directory, emptied at start), so the counters are the sum over the workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter("ca_service_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("ca_service_http_request_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
PROBLEMS = Counter("ca_service_problems_total", "Refusals by stable problem code", ["code"])
ISSUED = Counter("ca_service_certificates_issued_total", "Certificates issued", ["policy"])


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g._t0 = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(request.method, route, str(resp.status_code)).inc()
        t0 = getattr(g, "_t0", None)
        if t0 is not None:
            LATENCY.labels(request.method, route).observe(time.perf_counter() - t0)
        if resp.mimetype == "application/problem+json":
            code = (resp.get_json(silent=True) or {}).get("code", "unknown")
            PROBLEMS.labels(str(code)).inc()
        return resp

    state = StateCollector(app.extensions["ca_service"])

    @app.get("/metrics")
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            data = generate_latest(registry)
        else:
            data = generate_latest()
        scrape = CollectorRegistry()
        scrape.register(state)
        return Response(data + generate_latest(scrape), mimetype=CONTENT_TYPE_LATEST)


class StateCollector(Collector):
    """Gauges read from the database at scrape time (services/opstate.py)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy.exc import SQLAlchemyError

        from ca_service.services.opstate import operational_state

        up = GaugeMetricFamily("ca_service_database_up", "1 when the state below could be read")
        try:
            st = operational_state(self.svc)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc)
            if value is not None:
                g.add_metric([], value)
            return g

        yield gauge("ca_service_log_size", "Entries in the transparency log", st.log_size)
        yield gauge("ca_service_checkpoint_size", "Size of the newest signed checkpoint", st.checkpoint_size)
        yield gauge("ca_service_checkpoint_age_seconds", "Age of the newest checkpoint", st.checkpoint_age_seconds)
        yield gauge("ca_service_anchor_lag_leaves", "Checkpointed leaves no final anchor covers", st.anchor_lag_leaves)
        yield gauge("ca_service_anchor_lag_seconds", "Age of the oldest checkpoint no final anchor covers",
                    st.anchor_lag_seconds)
        yield gauge("ca_service_challenges", "Rows in the challenge table", st.challenges)
        yield gauge("ca_service_collateral_duty_last_run_age_seconds",
                    "Seconds since the collateral duty (refresh + re-appraisal) last ran",
                    st.collateral_duty_age_seconds)
        exp = GaugeMetricFamily("ca_service_collateral_expiry_seconds",
                                "Seconds until each cached collateral item's next update (negative: past)",
                                labels=["kind", "key"])
        for (kind, key), seconds in sorted(st.collateral_expiry_seconds.items()):
            exp.add_metric([kind, key], seconds)
        yield exp
