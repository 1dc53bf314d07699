"""Prometheus metrics at /metrics: request counts and latency by route, refusals by stable code.

With several gunicorn workers each process keeps its own registry unless
``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus-client's multiprocess mode), which this honours.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

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

    @app.get("/metrics")
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            data = generate_latest(registry)
        else:
            data = generate_latest()
        return Response(data, mimetype=CONTENT_TYPE_LATEST)
