"""A client-side deadline for PostgreSQL round trips (psycopg2's wait callback).

Server-side timeouts (``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout``)
only help while the server runs. A frozen server (stopped process, a partition that still ACKs
TCP) never answers, and a blocking libpq call would wait for the kernel's TCP timeout (~2 h). With a
wait callback, psycopg2 drives every connect and query through ``poll()``; this one gives up when
the server sends nothing for the connection's ``ca_deadline_s`` seconds, and psycopg2 then closes
the connection (SQLAlchemy sees a disconnect and discards it from the pool).
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg2
from psycopg2 import extensions

_factories: dict[float, type] = {}


def connection_factory(deadline_s: float) -> type:
    """A psycopg2 connection class whose round trips give up after ``deadline_s`` of silence."""
    cls = _factories.get(deadline_s)
    if cls is None:
        cls = type("DeadlineConnection", (extensions.connection,), {"ca_deadline_s": deadline_s})
        _factories[deadline_s] = cls
    extensions.set_wait_callback(wait)
    return cls


def _ready(fd: int, events: int, timeout: float | None) -> bool:
    """Whether ``fd`` became ready (or failed: POLLERR/POLLHUP, which ``conn.poll()`` then reports)
    within ``timeout`` seconds. ``poll(2)``, not ``select(2)``: select cannot watch a descriptor
    of 1024 or above (FD_SETSIZE), and a serve worker holding a thousand client connections opens
    its database connections above that (issue 15 boot storm: ``ValueError: filedescriptor out of
    range in select()``, a 500 on POST /v1/challenges)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))


def wait(conn: Any) -> None:
    """psycopg2 wait callback: poll until done; raise OperationalError after ``ca_deadline_s`` idle."""
    limit = getattr(conn, "ca_deadline_s", None)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise psycopg2.OperationalError(f"database sent nothing for {limit:g} s (client deadline)")
        if state == extensions.POLL_READ:
            ready = _ready(conn.fileno(), select.POLLIN, timeout)
        elif state == extensions.POLL_WRITE:
            ready = _ready(conn.fileno(), select.POLLOUT, timeout)
        else:  # pragma: no cover - psycopg2 never returns another state
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        if ready and limit is not None:
            deadline = time.monotonic() + limit  # progress: the server is alive
