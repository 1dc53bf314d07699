"""PostgreSQL connections whose descriptors are 1024 or above (a serve worker holding a thousand
client sockets opens its database connections there; issue 15 boot storm). The wait callback
(db/pgwait.py) polls them: select(2) could not (``ValueError: filedescriptor out of range``, a 500).

The connection is made in a process of its own: in the test worker other threads (pools, servers,
earlier tests' leftovers) open and close descriptors below 1024 at any moment, and psycopg2's
socket takes the lowest free one, so filling the table there cannot make it land above 1024."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

_CHILD = textwrap.dedent("""
    import json, os, resource, sys
    from sqlalchemy import text
    from ca_service.db.session import Database, DbTimeouts

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = []
    while not held or held[-1] < 1030:  # the next descriptors this process opens are above 1024
        held.append(os.open(os.devnull, os.O_RDONLY))
    db = Database(sys.argv[1], DbTimeouts())  # with timeouts: psycopg2 goes through the wait callback
    try:
        with db.engine.connect() as conn:
            fd = conn.connection.dbapi_connection.fileno()
            answer = conn.execute(text("SELECT 41 + 1")).scalar()
        print(json.dumps({"fd": fd, "answer": answer}))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        db.dispose()
""")


def test_a_connection_above_fd_1024_connects_and_queries():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    url = os.environ.get("CA_SERVICE_TEST_POSTGRES_URL", DEFAULT_PG)
    p = subprocess.run([sys.executable, "-c", _CHILD, url], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if "error" in out and ("Connection refused" in out["error"] or "could not connect" in out["error"]):
        pytest.skip(f"no PostgreSQL at {url}")  # say so rather than pass
    assert "error" not in out, out["error"]
    assert out["fd"] > 1024, out
    assert out["answer"] == 42
