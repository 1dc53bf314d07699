"""A PostgreSQL cluster of our own on a free loopback port, for outage tests (stop, freeze, kill).

Never the shared server on 5432: this one is created with initdb in a temporary directory and
removed at the end. As root, the server runs as the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ports import free_port as _free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.pg_ctl = _bin("pg_ctl") or ""
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_bin("initdb") or "", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every backend it started (ours: read from its pid file and /proc)."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True)
        return [main, *(int(p) for p in out.stdout.split())]

    def freeze(self) -> list[int]:
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        pytest.skip("no initdb/pg_ctl: cannot start a PostgreSQL cluster of our own")
    # outside pytest's 0700 tmp tree: the server may run as another user
    root = Path(tempfile.mkdtemp(prefix="ca-pgc-"))
    os.chmod(root, 0o755)
    cluster = Cluster(root / "pg")
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.thaw(cluster.pids())
        except (OSError, ValueError):
            pass
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass
        deadline = time.time() + 10
        while (cluster.data / "postmaster.pid").exists() and time.time() < deadline:
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


# A replica that takes the log's sequencing lock and then stalls (the tests SIGSTOP it): its own session
# settings decide when the server ends its stalled transaction. argv[1]: the database URL.
LOG_LOCK_HOLDER = """
import sys, time
from sqlalchemy import text
from ca_service.db.session import Database, DbTimeouts
from ca_service.tlog.sequencer import LOG_LOCK_KEY
db = Database(sys.argv[1], DbTimeouts(lock_ms=700, statement_ms=1500, idle_in_transaction_ms=2000))
with db.transaction() as s:
    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOG_LOCK_KEY})
    print("locked", flush=True)
    time.sleep(3600)
"""
