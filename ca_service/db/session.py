"""Engine and session factory. Services own their transactions via :meth:`Database.transaction`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


@dataclass(frozen=True)
class DbTimeouts:
    """PostgreSQL timeouts and keepalives (settings ``CA_SERVICE_DB_*``; README).

    A lock holder that has gone away (paused, partitioned) is cut off by the server after
    ``idle_in_transaction_ms``; waiters give up after ``lock_ms`` with a 503 instead of queueing;
    a frozen server is given up after ``client_s`` of silence (:mod:`ca_service.db.pgwait`).
    """

    lock_ms: int = 5000
    statement_ms: int = 10000
    idle_in_transaction_ms: int = 10000
    connect_s: int = 5
    keepalives_idle_s: int = 5
    keepalives_interval_s: int = 2
    keepalives_count: int = 3
    pool_timeout_s: float = 5.0

    @property
    def client_s(self) -> float:
        """Client-side silence deadline: longer than any statement the server lets run."""
        return self.statement_ms / 1000 + 2.0

    def session_sql(self) -> list[str]:
        return [f"SET lock_timeout = {int(self.lock_ms)}",
                f"SET statement_timeout = {int(self.statement_ms)}",
                f"SET idle_in_transaction_session_timeout = {int(self.idle_in_transaction_ms)}",
                # the server's side of the keepalives: a vanished client's session ends too
                f"SET tcp_keepalives_idle = {int(self.keepalives_idle_s)}",
                f"SET tcp_keepalives_interval = {int(self.keepalives_interval_s)}",
                f"SET tcp_keepalives_count = {int(self.keepalives_count)}"]


def make_engine(url: str, timeouts: DbTimeouts | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``. ``timeouts`` (PostgreSQL) bounds every wait; ``None`` (migrations,
    admin tools) keeps the server's defaults."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own BEGIN handling must be off for the BEGIN IMMEDIATE hook below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Any) -> None:
            # Take the write lock at BEGIN: read-then-write transactions (challenge consumption,
            # log sequencing) cannot interleave, which makes them atomic on SQLite too.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if timeouts is None or not url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, **kwargs)
    from ca_service.db.pgwait import connection_factory

    connect_args = {
        "connect_timeout": timeouts.connect_s,
        "keepalives": 1,
        "keepalives_idle": timeouts.keepalives_idle_s,
        "keepalives_interval": timeouts.keepalives_interval_s,
        "keepalives_count": timeouts.keepalives_count,
        # unacknowledged data (a partition mid-request) also ends the connection
        "tcp_user_timeout": int(timeouts.client_s * 1000),
        "connection_factory": connection_factory(timeouts.client_s),
    }
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                           pool_timeout=timeouts.pool_timeout_s, connect_args=connect_args, **kwargs)
    statements = timeouts.session_sql()

    @event.listens_for(engine, "connect")
    def _pg_timeouts(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("; ".join(statements))
        cur.close()
        dbapi_conn.commit()

    return engine


class Database:
    """One engine + session factory per process."""

    def __init__(self, url: str, timeouts: DbTimeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts if timeouts is not None else DbTimeouts()
        self.engine = make_engine(url, self.timeouts)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: commit on success, roll back on any exception."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def dispose(self) -> None:
        self.engine.dispose()
