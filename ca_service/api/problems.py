"""RFC 9457 problem details, in one place. Unknown errors: generic 500 with a correlation id."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from ca_service.errors import CAServiceError, DatabaseBusy, DatabaseUnavailable

log = logging.getLogger("ca_service.api")

# a URI reference resolved against the API's base: GET /problems/<code> describes the code
PROBLEM_TYPE_BASE = "/problems/"

HTTP_CODES = {
    400: "request.bad_request",
    401: "auth.unauthorized",
    403: "auth.forbidden",
    404: "not_found",
    405: "request.method_not_allowed",
    406: "request.not_acceptable",
    413: "request.too_large",
    415: "request.unsupported_media_type",
    429: "request.rate_limited",
}


def problem(status: int, code: str, title: str, detail: str, **extensions: Any) -> Response:
    body = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    for k, v in extensions.items():
        if k not in body:
            body[k] = v
    resp = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    return resp


def init_app(app: Flask) -> None:
    @app.get("/problems")
    @app.get("/problems/<code>")
    def _problem_types(code: str | None = None) -> Response:
        from ca_service.api.problem_docs import catalogue, markdown

        if code is not None:
            for c, status, title in catalogue():
                if c == code:
                    return Response(json.dumps({"code": c, "status": status, "title": title,
                                                "list": PROBLEM_TYPE_BASE.rstrip("/")}),
                                    mimetype="application/json")
            return problem(404, "not_found", "Not found", "no such problem code")
        return Response(markdown(), mimetype="text/markdown")

    @app.errorhandler(CAServiceError)
    def _ca_error(exc: CAServiceError) -> Response:
        if exc.status >= 500:
            cid = str(uuid.uuid4())
            log.error("service error %s (%s)", exc.code, cid, exc_info=exc)
            resp = problem(exc.status, exc.code, exc.title, f"{exc.title}; correlation id {cid}", correlation_id=cid)
        else:
            resp = problem(exc.status, exc.code, exc.title, exc.detail, **_jsonable(exc.fields))
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int):
            resp.headers["Retry-After"] = str(retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = HTTP_CODES.get(status, "request.error")
        resp = problem(status, code, exc.name, exc.description or exc.name)
        valid = getattr(exc, "valid_methods", None)
        if status == 405 and valid:
            resp.headers["Allow"] = ", ".join(valid)
        return resp

    from sqlalchemy.exc import DataError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception) -> Response:
        err = database_error(exc)
        # one line per failure, no traceback: an outage must not flood the log
        log.warning("database unavailable on %s %s: %s", request.method, request.path, _first_line(exc),
                    extra={"code": err.code})
        resp = problem(err.status, err.code, err.title, err.detail)
        resp.headers["Retry-After"] = str(err.retry_after)
        return resp

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Response:
        # a value the database cannot store or compare (out of range, bad encoding): the client's
        # input, not a server fault; the edge validation should have caught it, so log it
        log.warning("database refused a request value on %s %s", request.method, request.path)
        return problem(400, "request.invalid_value", "Invalid value", "a request value is out of range or invalid")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        cid = str(uuid.uuid4())
        log.error("unexpected error (%s) on %s %s", cid, request.method, request.path, exc_info=exc)
        return problem(500, "internal", "Internal error", f"An unexpected error occurred; correlation id {cid}",
                       correlation_id=cid)


# SQLSTATEs of a timeout the server enforced: lock_not_available, query_canceled (statement
# timeout), idle_in_transaction_session_timeout; SQLite says "database is locked".
_BUSY_SQLSTATES = {"55P03", "57014", "25P03"}


def database_error(exc: BaseException) -> DatabaseUnavailable:
    """The problem a database failure shows clients: busy (a timeout) or unavailable."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "pgcode", None)
    if sqlstate in _BUSY_SQLSTATES or "database is locked" in str(orig or exc):
        return DatabaseBusy("a database lock or statement timed out; retry shortly")
    return DatabaseUnavailable("the database cannot be reached or did not answer in time")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"[:300]


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[k] = v
    return out
