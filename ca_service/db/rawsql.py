"""Prebuilt statements run on the DBAPI cursor of a session's connection, for the issuance hot path.

A Core ``session.execute(insert(table), rows)`` costs ~0.2-0.4 ms of CPU before the driver sees it
(statement coercion, cache key, compiled-cache lookup, insertmanyvalues batching, execution
context, result set-up: 30-40% of an issuance's CPU, issue 15, docs/performance.md). These
statements are built once per table and dialect; each value goes through the column type's own bind
processor (the same conversion SQLAlchemy applies: UTC datetimes, JSON, bytes), so rows read back
through the ORM exactly as if SQLAlchemy had written them. They run in the caller's transaction,
on the connection the session already holds.

On PostgreSQL a multi-row INSERT is one statement (one round trip); on SQLite, ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class _Prepared:
    columns: tuple[str, ...]
    defaults: tuple[Any, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    head: str  # INSERT INTO t (cols) VALUES
    row: str  # (%s, %s, ...) or (?, ?, ...)
    tail: str  # ON CONFLICT ... or ""


class RawInsert:
    """``INSERT INTO table (the rows' columns) VALUES ...`` [``ON CONFLICT (key) DO NOTHING``]."""

    def __init__(self, table: Table, *, on_conflict_do_nothing: str | None = None) -> None:
        self.table = table
        self.conflict = on_conflict_do_nothing
        self._prepared: dict[tuple[str, tuple[str, ...]], _Prepared] = {}

    def _prepare(self, dialect: Dialect, keys: tuple[str, ...]) -> _Prepared:
        cols = [c for c in self.table.columns
                if c.name in keys or (c.default is not None and getattr(c.default, "is_scalar", False))]
        unknown = set(keys) - {c.name for c in cols}
        if unknown:
            raise KeyError(f"{self.table.name} has no column(s) {sorted(unknown)}")
        mark = "%s" if dialect.paramstyle in ("format", "pyformat") else "?"
        quote = dialect.identifier_preparer.quote
        return _Prepared(
            columns=tuple(c.name for c in cols),
            defaults=tuple(c.default.arg if c.default is not None and c.name not in keys  # type: ignore[attr-defined]
                           else None for c in cols),
            processors=tuple(c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols),
            # identifiers from the table's own metadata, values always bound: no input reaches the SQL text
            head="INSERT INTO " + quote(self.table.name)  # noqa: S608
                 + " (" + ", ".join(quote(c.name) for c in cols) + ") VALUES ",
            row="(" + ", ".join([mark] * len(cols)) + ")",
            tail=f" ON CONFLICT ({quote(self.conflict)}) DO NOTHING" if self.conflict else "",
        )

    def _params(self, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> tuple[_Prepared, list[tuple[Any, ...]]]:
        keys = tuple(sorted(rows[0]))
        cache_key = (dialect.name, keys)
        prep = self._prepared.get(cache_key)
        if prep is None:
            prep = self._prepared[cache_key] = self._prepare(dialect, keys)
        params = []
        for row in rows:
            values = []
            for name, default, proc in zip(prep.columns, prep.defaults, prep.processors, strict=True):
                value = row.get(name, default)
                values.append(value if proc is None or value is None else proc(value))
            params.append(tuple(values))
        return prep, params

    def execute(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (each with the same keys) in the session's transaction."""
        execute_all(session, [(self, rows)])


def execute_all(session: Session, inserts: Sequence[tuple[RawInsert, Sequence[Mapping[str, Any]]]]) -> None:
    """Each ``(insert, rows)`` in order, in the session's transaction: on PostgreSQL every one in a
    single round trip (one multi-row INSERT each, sent together), elsewhere ``executemany`` each."""
    conn = session.connection()
    dialect = conn.dialect
    cursor = conn.connection.cursor()
    try:
        if dialect.name == "postgresql":
            texts: list[str] = []
            flat: list[Any] = []
            for ins, rows in inserts:
                if rows:
                    prep, params = ins._params(dialect, rows)
                    texts.append(prep.head + ", ".join([prep.row] * len(params)) + prep.tail)
                    flat += [v for p in params for v in p]
            if texts:
                sql = "; ".join(texts)
                with as_sqlalchemy_error(dialect, sql):
                    cursor.execute(sql, flat)
        else:
            for ins, rows in inserts:
                if rows:
                    prep, params = ins._params(dialect, rows)
                    with as_sqlalchemy_error(dialect, prep.head + prep.row + prep.tail):
                        cursor.executemany(prep.head + prep.row + prep.tail, params)
    finally:
        cursor.close()


def scalar(session: Session, sql_pg: str, sql_other: str, params: Sequence[Any]) -> Any:
    """The first column of the first row of a textual statement with positional parameters
    (``%s`` on PostgreSQL, ``?`` elsewhere), on the session's connection, or ``None``."""
    conn = session.connection()
    cursor = conn.connection.cursor()
    sql = sql_pg if conn.dialect.name == "postgresql" else sql_other
    try:
        with as_sqlalchemy_error(conn.dialect, sql):
            cursor.execute(sql, tuple(params))
            row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else row[0]


@contextmanager
def as_sqlalchemy_error(dialect: Dialect, sql: str, *, invalidate: Any = None) -> Iterator[None]:
    """A DBAPI error on the raw cursor as SQLAlchemy's own (``OperationalError`` for a lock or
    statement timeout, a lost connection...), as ``session.execute`` would raise it: the API maps
    those to 503 ``service.database_*``; a bare psycopg2 error was a 500 ``internal``.
    ``invalidate``: a pooled connection (not under a session) to discard when the error says it
    is lost, as SQLAlchemy does for its own connections."""
    dbapi = dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        lost = invalidate is not None and dialect.is_disconnect(exc, invalidate.dbapi_connection, None)
        if lost:
            invalidate.invalidate(exc)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, hide_parameters=True, dialect=dialect,
                                  connection_invalidated=lost) from exc
