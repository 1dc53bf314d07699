"""PostgreSQL connections whose descriptors are 1024 or above (a serve worker holding a thousand
client sockets opens its database connections there; issue 15 boot storm). The wait callback
(db/pgwait.py) polls them: select(2) could not (``ValueError: filedescriptor out of range``, a 500)."""

from __future__ import annotations

import gc
import os
import resource

import pytest
from sqlalchemy import text

from ca_service.db.session import Database, DbTimeouts

DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def high_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = []
    while not held or held[-1] < 1030:  # the next descriptors the process opens are above 1024
        held.append(os.open(os.devnull, os.O_RDONLY))
    yield held
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fill_holes(held: list[int]) -> None:
    """Take every descriptor below the held ones that was freed since (a socket another thread or the
    garbage collector closed): the connection's socket must land above 1024, not in such a hole."""
    gc.collect()
    while (fd := os.open(os.devnull, os.O_RDONLY)) < held[-1]:
        held.append(fd)
    os.close(fd)


def test_a_connection_above_fd_1024_connects_and_queries(high_fds):
    url = os.environ.get("CA_SERVICE_TEST_POSTGRES_URL", DEFAULT_PG)
    db = Database(url, DbTimeouts())  # with timeouts: psycopg2 goes through the wait callback
    try:
        # another thread of this process (a pool's, the collector) can free a descriptor below 1024
        # between filling the holes and psycopg2's socket(): that connection is a low one, not the case
        # under test, so it is discarded (the pool must not hand it out again) and made again
        lows = []
        for _ in range(20):
            _fill_holes(high_fds)
            conn = db.engine.connect()
            fd = conn.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            if fd > 1024:
                break
            lows.append(fd)
            conn.invalidate()
            conn.close()
        assert fd > 1024, lows
        with conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    except Exception as exc:  # no PostgreSQL here: say so rather than pass
        if "Connection refused" in str(exc) or "could not connect" in str(exc):
            pytest.skip(f"no PostgreSQL at {url}")
        raise
    finally:
        db.dispose()
