# ruff: noqa: F811  (pytest fixtures imported from anchor_fixtures)
"""A frozen anchoring replica (SIGSTOP of a real `ca-service anchor run` process, in the middle of a
tick) is cut off within seconds: another worker takes the lease over and anchors, and when the frozen
one resumes it finds another holder and sends nothing. PostgreSQL (the shared server, a database of
its own) and SQLite; a real Anvil node behind a JSON-RPC proxy that holds the answer to the frozen
worker's eth_estimateGas (computed before the takeover: the anchor is still to be made), so the
freeze lands between planning the anchor and signing and sending it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from ca_service.clock import SystemClock
from ca_service.db.models.anchor import Anchor, AnchorContract, AnchorWorkerLease
from ca_service.db.models.tlog import TlogCheckpoint
from ca_service.db.session import Database
from ca_service.services.anchoring import DbCheckpointSource

from .anchor_fixtures import CHAIN_ID, DEV_KEY, anchor_db, anchored_sizes, anvil, client, worker  # noqa: F401

pytestmark = pytest.mark.anvil
LEASE = 2.0


class HoldingProxy:
    """JSON-RPC to ``upstream``; the answers to a held method wait until ``release``; counts methods."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.held_method: str | None = None
        self.release_event = threading.Event()
        self.waiting = threading.Event()
        self.counts: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                method = json.loads(body).get("method", "?")
                proxy.counts[method] += 1
                r = requests.post(proxy.upstream, data=body, headers={"Content-Type": "application/json"},
                                  timeout=10)
                if method == proxy.held_method:  # answered by the node now, delivered on release
                    proxy.waiting.set()
                    proxy.release_event.wait(60)
                try:
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content)
                except OSError:  # the client gave up (killed at the end of the test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self, method: str) -> None:
        self.held_method = method

    def release(self) -> None:
        self.held_method = None
        self.release_event.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()


def _publish(db: Database, size: int) -> None:
    note = f"example.test/log\n{size}\nroot{size}\n\n— sig\n"
    with db.transaction() as s:
        s.add(TlogCheckpoint(size=size, root_hash=hashlib.sha256(note.encode()).digest(), note=note,
                             note_sha256=hashlib.sha256(note.encode()).hexdigest(), created_at=datetime.now(UTC)))


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _rows(db: Database) -> list[Anchor]:
    with db.read() as s:
        return list(s.scalars(select(Anchor).order_by(Anchor.size)))


def test_frozen_worker_is_cut_off_and_sends_nothing_when_it_resumes(anchor_db, anvil, tmp_path: Path) -> None:
    proxy = HoldingProxy(anvil.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    env.update({"CA_SERVICE_HOME": str(tmp_path / "a"), "CA_SERVICE_PROFILE": "insecure-dev",
                "CA_SERVICE_DATABASE_URL": anchor_db.engine.url.render_as_string(hide_password=False),
                "CA_SERVICE_CHAIN_RPC": proxy.url, "CA_SERVICE_CHAIN_ID": str(CHAIN_ID),
                "CA_SERVICE_CHAIN_PRIVATE_KEY": DEV_KEY, "CA_SERVICE_ANCHOR_CONFIRMATIONS": "0",
                "CA_SERVICE_ANCHOR_LEASE_SECONDS": str(LEASE), "PYTHONWARNINGS": "ignore"})
    log = tmp_path / "a.log"
    with open(log, "wb") as out:
        a = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "anchor", "run", "--poll", "0.2",
                              "--interval", "0", "--leaves", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def deployed() -> bool:
            with anchor_db.read() as s:
                return s.scalars(select(AnchorContract)).first() is not None

        _wait(deployed, 60, "worker A did not deploy the contract")
        deploy_sends = proxy.counts["eth_sendRawTransaction"]   # the deployment (and funding: none on Anvil)
        proxy.hold("eth_estimateGas")
        _publish(anchor_db, 3)
        _wait(proxy.waiting.is_set, 30, "worker A did not get to estimating the anchor's gas")
        with anchor_db.read() as s:
            holder = s.get(AnchorWorkerLease, "anchor-worker").holder
        assert holder.split(":")[1] == str(a.pid)           # A holds the lease, mid-tick
        # B is made before A freezes: its first tick must come while A's lease still runs (at most
        # LEASE after A's last heartbeat), and making B (a chain client) on a loaded box took longer
        b = worker(anchor_db, anvil, DbCheckpointSource(anchor_db), SystemClock(), confirmations=0,
                   lease_seconds=LEASE)
        os.kill(a.pid, signal.SIGSTOP)                     # frozen: its TCP peers and sockets stay up
        frozen = time.monotonic()
        first = b.tick()
        assert first.action == "locked", first             # A's lease has not expired yet
        seen: list[str] = []
        takeover = None
        while not seen or seen[-1] != "final":
            assert time.monotonic() - frozen < 3 * LEASE + 10, seen
            started = time.monotonic()
            r = b.tick()
            if r.action != "locked":
                seen.append(r.action)
                # when B's tick that took the lease began, not when its first send to the chain came
                # back: that send's time is the loaded box's, not the lease's
                takeover = takeover or started - frozen
            time.sleep(0.05)
        assert seen == ["sent", "included", "final"], seen
        print(f"takeover {takeover:.2f} s after SIGSTOP (lease {LEASE} s)")
        # cut off within seconds of the lease running out (the margin is for a loaded 2-core box: 5.4 s was
        # seen at a load average of 25, measured then after the tick's own RPC calls); not before is the
        # "locked" above
        assert takeover < LEASE + 6, takeover
        assert proxy.counts["eth_sendRawTransaction"] == deploy_sends   # A, frozen, sent nothing

        proxy.release()                                    # A's held call is answered (into its socket)
        os.kill(a.pid, signal.SIGCONT)
        _wait(lambda: b"anchor.lease_lost" in log.read_bytes() or proxy.counts["eth_sendRawTransaction"] > deploy_sends,
              20, "A did nothing after it resumed")
        time.sleep(1.5)                                    # A ticks on as a normal worker: nothing to do
        assert proxy.counts["eth_sendRawTransaction"] == deploy_sends, proxy.counts   # nor after it resumed
        assert b"anchor tick stopped (anchor.lease_lost)" in log.read_bytes()     # it noticed, and said so
        rows = _rows(anchor_db)
        assert [(r.size, r.state) for r in rows] == [(3, "final")]
        assert rows[0].tx_hashes == [rows[0].tx_hash.hex()]  # one transaction, B's
        contract = b.contract()
        assert anchored_sizes(client(anvil), contract.address) == {3: 1}

        _publish(anchor_db, 5)                             # A, resumed, is a worker like any other
        _wait(lambda: [r.state for r in _rows(anchor_db)] == ["final", "final"], 30, "A did not anchor 5")
        assert proxy.counts["eth_sendRawTransaction"] == deploy_sends + 1
        assert anchored_sizes(client(anvil), contract.address) == {3: 1, 5: 1}
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.terminate()
            a.wait(20)
        proxy.close()
