"""Engine and session factory. Services own their transactions via :meth:`Database.transaction`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as exc_mod
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 12


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
    # a pooled connection idle longer than this is pinged before use (see _ping_when_idle)
    ping_idle_s: float = 1.0

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
    # pool_size covers a serve worker's threads (8 by default) plus its publisher, purger and anchor
    # threads: with SQLAlchemy's default of 5, the overflow connections were closed at every
    # check-in and opened again (a PostgreSQL backend started per request under load; issue 15)
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=10,
                           pool_timeout=timeouts.pool_timeout_s, connect_args=connect_args, **kwargs)
    _ping_when_idle(engine, timeouts.ping_idle_s)
    statements = timeouts.session_sql()

    @event.listens_for(engine, "connect")
    def _pg_timeouts(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("; ".join(statements))
        cur.close()
        dbapi_conn.commit()

    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool: one ``SELECT 1``
    before handing out a connection idle for more than ``idle_s``.

    ``pool_pre_ping`` pings on every checkout, one extra round trip per transaction (two of the
    thirteen of an issuance, issue 15). A connection checked in a moment ago was working a moment
    ago; one that sat idle may have lost its server (restart, failover), and it is the one pinged.
    A connection that dies between two busy requests fails that request with a 503
    (``service.database_unavailable``); SQLAlchemy then invalidates the pool, so the next request
    gets a fresh connection.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("checked_in_at")
        if last is None or time.monotonic() - last <= idle_s:
            return  # fresh from connect, or busy a moment ago
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()
        except Exception as exc:  # the DBAPI's error, whatever it is: this connection is gone
            # the pool discards this connection and checks out (or opens) another one
            raise exc_mod.DisconnectionError("pooled connection failed its ping") from exc


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

    @contextmanager
    def autocommit_cursor(self, sql: str) -> Iterator[Any]:
        """A DBAPI cursor on a pooled PostgreSQL connection in autocommit mode, for one read
        statement ``sql`` (named for error reports): one round trip, where a session's read is
        three (BEGIN, the statement, ROLLBACK at check-in), and none of the ORM session's
        bookkeeping (the issuance pre-read, issue 15). A DBAPI error is raised as SQLAlchemy's
        (what ``session.execute`` raises: the API maps it to 503 ``service.database_*``); a
        connection found lost is discarded from the pool.
        """
        from ca_service.db.rawsql import as_sqlalchemy_error

        dialect = self.engine.dialect
        with as_sqlalchemy_error(dialect, "connect"):  # the pool's connect raises the DBAPI's own error
            proxied = self.engine.raw_connection()
        dbapi_conn = proxied.dbapi_connection
        cursor = None
        try:
            with as_sqlalchemy_error(dialect, sql, invalidate=proxied):
                dbapi_conn.autocommit = True  # type: ignore[union-attr]
                try:
                    cursor = dbapi_conn.cursor()  # type: ignore[union-attr]
                    yield cursor
                finally:
                    if cursor is not None:
                        cursor.close()
                    if not dbapi_conn.closed:  # type: ignore[union-attr]
                        dbapi_conn.autocommit = False  # type: ignore[union-attr]
        finally:
            proxied.close()  # back to the pool (an invalidated one is closed)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def dispose(self) -> None:
        self.engine.dispose()
