"""The per-client rate limit (issue 11 section 7) over real HTTP against ``ca-service serve`` with two
workers, on SQLite and on PostgreSQL: one client's burst is shared by both workers (the table is in
shared memory, not per worker), above it 429 problem+json with ``Retry-After``; each route has its
own bucket; another client (named by a trusted proxy) has its own; reads are not limited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.test_serve_faults import _children, _free_port, _wait_ready

CLI = [sys.executable, "-m", "ca_service.cli"]
BURST = 6


@pytest.fixture(scope="module")
def limited(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("ratelimit")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_TRUSTED_PROXIES": "127.0.0.1"}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    # the options win over CA_SERVICE_RATE_LIMIT (the suite's conftest turns it off); a refill of
    # one token per 1000 s leaves exactly the burst for the length of the test
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--publish-interval", "0",
                             "--rate-limit", "0.001", "--rate-limit-burst", str(BURST)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        deadline = time.time() + 20
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        yield url, proc, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _served_by_worker(home: Path, workers: list[int], route: str) -> dict[int, dict[str, float]]:
    """Per worker pid, its request counts on ``route`` by status, read from its own prometheus
    multiprocess file (serve keeps them in $CA_SERVICE_HOME/prometheus)."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[int, dict[str, float]] = {}
    for pid in workers:
        counts: dict[str, float] = {}
        for f in (home / "prometheus").glob(f"counter_{pid}.db"):
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
                name, sample, labels, _help = json.loads(key)
                if sample == "ca_service_http_requests_total" and labels.get("route") == route:
                    counts[labels["status"]] = counts.get(labels["status"], 0) + value
        out[pid] = counts
    return out


def test_one_clients_burst_holds_across_workers(limited):
    url, proc, home = limited
    workers = sorted(_children(proc.pid))
    assert len(workers) == 2

    def one(_: int) -> requests.Response:
        with requests.Session() as s:  # a new connection each: the kernel spreads them over both workers
            return s.post(f"{url}/v1/challenges", timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(40)))
    statuses = sorted(r.status_code for r in answers)
    # 40 requests, one client, two workers: the burst passes once, not once per worker
    assert statuses.count(201) == BURST, statuses
    assert statuses.count(429) == 40 - BURST
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["Content-Type"] == "application/problem+json"
    doc = refused.json()
    assert doc["code"] == "request.rate_limited" and doc["status"] == 429 and doc["type"] == "/problems/request.rate_limited"
    retry = int(refused.headers["Retry-After"])
    # at 0.001 tokens/s the next token is 1000 s after the bucket emptied, moments ago
    assert 900 <= retry <= 1000 and doc["retry_after"] == retry
    assert refused.headers["X-Request-Id"]
    # until both workers have answered some: a worker that never gave a 201 refused with 429 from
    # its first request on, which a table per worker would not do (it would have its own burst)
    sent = 40
    seen = _served_by_worker(home, workers, "/v1/challenges")
    for _ in range(15):
        if all(seen[pid] for pid in workers):
            break
        with ThreadPoolExecutor(16) as pool:
            extra = list(pool.map(one, range(32)))
        sent += len(extra)
        assert all(r.status_code == 429 for r in extra)
        seen = _served_by_worker(home, workers, "/v1/challenges")
    if not all(seen[pid] for pid in workers):
        pytest.skip(f"the kernel gave every connection to one worker ({seen}); the count above still held")
    assert sum(c.get("201", 0) for c in seen.values()) == BURST
    assert sum(c.get("429", 0) for c in seen.values()) == sent - BURST


def test_each_route_and_client_has_its_own_bucket_and_reads_are_free(limited):
    url, _, _ = limited
    # this client is held back on challenges (the test above, or now)
    while requests.post(f"{url}/v1/challenges", timeout=10).status_code != 429:
        pass
    # ...but not on attestations: a body that is refused for what it is, not for the rate
    r = requests.post(f"{url}/v1/attestations", json={"policy": "sim", "evidence": []}, timeout=10)
    assert r.status_code != 429 and r.headers["Content-Type"] == "application/problem+json"
    # ...nor on reads
    for _ in range(3 * BURST):
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{url}/v1/ca/chain.pem", timeout=10).status_code in (200, 404)
    # a client named by the trusted proxy (127.0.0.1 here) has its own bucket, an IPv6 one per /64
    for client in ("203.0.113.7", "2001:db8:5:6::1"):
        got = [requests.post(f"{url}/v1/challenges", headers={"X-Forwarded-For": client}, timeout=10).status_code
               for _ in range(BURST + 2)]
        assert got == [201] * BURST + [429] * 2, (client, got)
    got = requests.post(f"{url}/v1/challenges", headers={"X-Forwarded-For": "2001:db8:5:6:ffff::2"}, timeout=10)
    assert got.status_code == 429  # the same /64


def test_certificates_are_limited_too(limited):
    url, _, _ = limited
    got = [requests.post(f"{url}/v1/certificates", json={}, headers={"X-Forwarded-For": "198.51.100.44"},
                         timeout=10) for _ in range(BURST + 1)]
    assert [r.status_code for r in got[:BURST]] == [got[0].status_code] * BURST
    assert got[0].status_code in (400, 422)
    assert got[BURST].status_code == 429 and got[BURST].json()["code"] == "request.rate_limited"


def test_openapi_lists_the_429_of_the_limited_routes(client):
    doc = client.get("/v1/openapi.json").get_json()
    paths = doc["paths"]
    for route in ("/v1/challenges", "/v1/certificates", "/v1/attestations"):
        r429 = paths[route]["post"]["responses"]["429"]
        r429 = doc["components"]["responses"][r429["$ref"].rsplit("/", 1)[1]] if "$ref" in r429 else r429
        assert "request.rate_limited" in r429["description"] and r429["headers"]["Retry-After"]["required"]
    assert "429" not in paths["/v1/certificates/{serial}/revoke"]["post"]["responses"]
