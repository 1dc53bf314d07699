"""Every answer of ``ca-service serve`` is RFC 9457 problem+json (issue 11 section 5), also those that
gunicorn gives before the app sees a request, and worker timeouts. Driven as an attacker would:
raw bytes on a TCP socket against a real server, on SQLite and on PostgreSQL
(``CA_SERVICE_TEST_DATABASE=postgres``).

Before: a request line or header over gunicorn's limits got an HTML page, a chunked body over the
size limit a truncated 400 ``request.malformed_json``, a request that trickled past
``--request-timeout`` a silent close, and a request that hung (here: behind a database lock) was
never answered at all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.conftest import use_postgres
from tests.integration.test_serve_faults import _children, _free_port, _wait_ready

CLI = [sys.executable, "-m", "ca_service.cli"]
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def home_env(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("srvp")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_MAX_BODY_BYTES": str(LIMIT)}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    return env


@contextmanager
def served(env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    port = _free_port()
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--publish-interval", "0", *args],
                            env={**env, **(extra_env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def exchange(port: int, data: bytes, *, timeout: float = 15) -> bytes:
    """Send raw bytes, read until the server closes or a full response with its body arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: read the answer
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return out


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body)


def assert_problem(raw: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, doc = parse(raw)
    assert got == status, raw[:400]
    assert headers["content-type"] == "application/problem+json"
    assert doc["code"] == code and doc["status"] == status and doc["type"] == f"/problems/{code}"
    assert doc["title"] and doc["detail"]
    return headers


def chunked(body: bytes, size: int = 8192) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.fixture(scope="module")
def server(home_env):
    with served(home_env, "--workers", "2", "--request-timeout", "2") as (port, proc):
        yield port, proc


HOST = b"Host: x\r\n"


@pytest.mark.parametrize(("name", "data", "status", "code"), [
    ("request line over 4094 bytes", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
     414, "request.line_too_long"),
    ("a header over 8190 bytes", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 9000 + b"\r\n\r\n",
     431, "request.headers_too_large"),
    ("more than 100 headers", b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: a\r\n" % i for i in range(120))
     + b"\r\n", 431, "request.headers_too_large"),
    ("garbage request line", b"GARBAGE\r\n\r\n", 400, "request.malformed_http"),
    ("bad HTTP version", b"GET / HTTP/9.9\r\n" + HOST + b"\r\n", 400, "request.malformed_http"),
    ("NUL in a header", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400, "request.malformed_http"),
    ("bad chunk size", b"POST /v1/challenges HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
     400, "request.malformed_http"),
    ("unknown transfer coding", b"POST /v1/challenges HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: foo, chunked\r\n\r\n"
     + chunked(b"{}"), 501, "request.unsupported_transfer_coding"),
    ("gzip transfer coding (gunicorn hands it on undecoded)", b"POST /v1/challenges HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(b"{}"), 501, "request.unsupported_transfer_coding"),
    ("Expect other than 100-continue", b"POST /v1/challenges HTTP/1.1\r\n" + HOST + b"Expect: 200-ok\r\n"
     b"Content-Length: 0\r\n\r\n", 417, "request.expectation_failed"),
])
def test_gunicorn_refusals_are_problem_json(server, name, data, status, code):
    port, _ = server
    headers = assert_problem(exchange(port, data), status, code)
    assert headers["connection"] == "close", name
    assert "<html" not in json.dumps(headers)
    # the worker is fine: the next request is served
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_a_chunked_body_over_the_limit_is_413(server):
    port, _ = server
    head = (b"POST /v1/attestations HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    body = json.dumps({"policy": "sim", "evidence": [], "pad": "x" * (2 * LIMIT)}).encode()
    headers = assert_problem(exchange(port, head + chunked(body)), 413, "request.too_large")
    assert headers.get("x-request-id")
    # one byte over the limit is over; the limit itself is not (the app then judges the JSON)
    exact = b'"' + b"x" * (LIMIT - 2) + b'"'
    assert len(exact) == LIMIT
    assert_problem(exchange(port, head + chunked(exact + b" ")), 413, "request.too_large")
    status, _, doc = parse(exchange(port, head + chunked(exact)))
    assert status == 422 and doc["code"] == "request.schema"
    # the same body with a Content-Length over the limit: 413 without reading it
    big = b"x" * (LIMIT + 1)
    assert_problem(exchange(port, b"POST /v1/challenges HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(big) + big), 413, "request.too_large")
    # a chunked body within the limit is read exactly, also on a route that takes no body
    small = json.dumps({"policy": "no-such-policy", "evidence": [{"type": "sim", "data": ""}]}).encode()
    status, _, doc = parse(exchange(port, head + chunked(small, size=7)))
    assert status in (404, 422) and doc["code"] in ("policy.not_found", "request.schema")


def test_a_request_that_trickles_past_the_deadline_is_408(server):
    port, _ = server
    t0 = time.monotonic()
    # headers never finished
    assert_problem(exchange(port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Slow: a"), 408, "request.timeout")
    # a body shorter than its Content-Length
    assert_problem(exchange(port, b"POST /v1/attestations HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{"), 408, "request.timeout")
    assert time.monotonic() - t0 < 12
    # a chunked body that stops mid-way
    assert_problem(exchange(port, b"POST /v1/attestations HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":"), 408, "request.timeout")


@contextmanager
def database_locked(env: dict[str, str]) -> Iterator[None]:
    """Hold a lock that makes POST /v1/challenges wait (its INSERT), from outside the server."""
    url = env["CA_SERVICE_DATABASE_URL"]
    if use_postgres():
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE challenges IN ACCESS EXCLUSIVE MODE"))
            yield
            conn.rollback()
        engine.dispose()
    else:
        import sqlite3

        db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()


# the database waits longer than the worker timeout, so the worker is what answers
SLOW_DB = {"CA_SERVICE_DB_LOCK_TIMEOUT_MS": "60000", "CA_SERVICE_DB_STATEMENT_TIMEOUT_MS": "60000",
           "CA_SERVICE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "60000"}


def test_a_request_past_the_worker_timeout_is_answered_503(home_env):
    with served(home_env, "--workers", "1", "--timeout", "2", "--graceful-timeout", "3",
                extra_env=SLOW_DB) as (port, proc):
        url = f"http://127.0.0.1:{port}"
        (worker,) = _children(proc.pid)
        with database_locked(home_env):
            t0 = time.monotonic()
            resp = requests.post(f"{url}/v1/challenges", timeout=30)
            took = time.monotonic() - t0
            assert resp.status_code == 503, resp.text
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert resp.json()["code"] == "service.worker_timeout"
            assert resp.headers["Retry-After"] == "5"
            assert 2 <= took < 6
            # the other threads still serve
            assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
            # still stuck past --timeout + --graceful-timeout: the worker is retired and replaced
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and worker in _children(proc.pid):
                time.sleep(0.3)
        assert worker not in _children(proc.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_children(proc.pid)) < 1:
            time.sleep(0.3)
        assert requests.post(f"{url}/v1/challenges", timeout=10).status_code == 201


def _unread(port: int, client: socket.socket) -> int | None:
    """Bytes the server has not read yet on its end of ``client``'s connection (Linux /proc/net/tcp:
    local, remote, state, tx_queue:rx_queue), or None while that end is not listed."""
    theirs = f"0100007F:{port:04X}"
    mine = f"0100007F:{client.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == theirs and fields[2] == mine:
                return int(fields[4].split(":")[1], 16)
    return None


def _until_in_flight(env: dict[str, str], port: int, client: socket.socket, timeout: float = 30) -> None:
    """Until the request sent on ``client`` is in the app, waiting on the database lock: on PostgreSQL
    until the server shows a lock request not granted in the CA's database; on SQLite, whose waits show
    nowhere, until the worker has read the request off its socket, and then a second for the app to
    reach the lock. (It was a second from the send: on a loaded box the worker could still be about to
    read it, so the SIGABRT found nothing in flight and the connection closed unanswered.)"""
    deadline = time.monotonic() + timeout
    if use_postgres():
        from sqlalchemy import create_engine, text

        engine = create_engine(env["CA_SERVICE_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                while not conn.execute(text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE NOT l.granted AND a.datname = current_database()")).scalar():
                    conn.rollback()
                    assert time.monotonic() < deadline, "the request never waited on the lock"
                    time.sleep(0.05)
        finally:
            engine.dispose()
        return
    while _unread(port, client) != 0:
        assert time.monotonic() < deadline, "the worker never read the request"
        time.sleep(0.05)
    time.sleep(1.0)


def test_an_aborted_worker_answers_its_requests_first(home_env):
    # SIGABRT is what gunicorn's arbiter sends a worker whose main loop was silent for --timeout
    with served(home_env, "--workers", "1", "--timeout", "60", extra_env=SLOW_DB) as (port, proc):
        url = f"http://127.0.0.1:{port}"
        (worker,) = _children(proc.pid)
        with database_locked(home_env):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.sendall(b"POST /v1/challenges HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                _until_in_flight(home_env, port, s)
                os.kill(worker, signal.SIGABRT)
                raw = b""
                while chunk := s.recv(65536):
                    raw += chunk
            headers = assert_problem(raw, 503, "service.worker_timeout")
            assert headers["retry-after"] == "5"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kids = _children(proc.pid)
            if kids and worker not in kids:
                break
            time.sleep(0.3)
        _wait_ready(url, proc)
        assert requests.post(f"{url}/v1/challenges", timeout=10).status_code == 201
