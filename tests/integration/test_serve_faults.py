"""`ca-service serve` under client and process faults, over real HTTP on loopback: slow clients
cannot starve the API, a slow request is cut off at --request-timeout, GUNICORN_CMD_ARGS is
honoured, and workers die with their master (kill -9) so a restart can bind at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.integration.ports import free_port as _free_port

CLI = [sys.executable, "-m", "ca_service.cli"]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "serve exited")
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


@pytest.fixture(scope="module")
def home_env(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("srvf")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory()}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    return env


def _serve(env: dict, port: int, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--publish-interval", "0", *args],
                            env={**env, **(extra_env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_slow_clients_cannot_starve_the_api(home_env):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(home_env, port, "--workers", "2", "--request-timeout", "3")
    slow: list[socket.socket] = []
    try:
        _wait_ready(url, proc)
        # four clients (two per worker: what starved the old sync workers) send headers, and a
        # body, a byte at a time
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                s.sendall(b"POST /v1/challenges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{")
            else:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            slow.append(s)
        t0 = time.monotonic()
        for _ in range(10):
            assert requests.get(f"{url}/healthz", timeout=2).status_code == 200
        assert requests.post(f"{url}/v1/challenges", timeout=5).status_code == 201
        assert time.monotonic() - t0 < 5
        # the slow requests are cut off at --request-timeout, however patiently they trickle
        t0 = time.monotonic()
        closed = 0
        for s in slow:
            s.settimeout(1.0)
        while time.monotonic() - t0 < 10 and closed < len(slow):
            closed = 0
            for s in slow:
                try:
                    s.sendall(b"b")
                    data = s.recv(4096, socket.MSG_DONTWAIT)
                    closed += data == b"" or data.startswith(b"HTTP/1.1 4")
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            time.sleep(0.5)
        assert closed == len(slow), "slow requests were not cut off"
        assert time.monotonic() - t0 < 10
        print(f"\nfault-table: slow clients: 10 /healthz and a challenge answered meanwhile; the slow ones cut"
              f" {time.monotonic() - t0:.1f} s later (--request-timeout 3)")
    finally:
        for s in slow:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process; it may vanish while we read it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_gunicorn_cmd_args_and_workers_die_with_master(home_env):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # GUNICORN_CMD_ARGS wins over the options: 3 workers, not 2
    proc = _serve(home_env, port, "--workers", "2", extra_env={"GUNICORN_CMD_ARGS": "--workers 3"})
    try:
        _wait_ready(url, proc)
        deadline = time.time() + 20
        while len(_children(proc.pid)) < 3 and time.time() < deadline:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) == 3
        os.kill(proc.pid, signal.SIGKILL)  # the master, under kill -9
        proc.wait(timeout=10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and any(_running(w) for w in workers):
            time.sleep(0.2)
        alive = [w for w in workers if _running(w)]
        assert alive == [], "orphaned workers kept running"
        gone = time.monotonic() - t0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # a restart binds the same port at once
    again = _serve(home_env, port)
    t1 = time.monotonic()
    try:
        _wait_ready(url, again, timeout=30)
        print(f"\nfault-table: kill -9 of the master: workers gone {gone:.1f} s after; the restart answered"
              f" /healthz {time.monotonic() - t1:.1f} s after it started")
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(timeout=30)
