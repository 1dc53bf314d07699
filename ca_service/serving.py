"""How ``ca-service serve`` runs gunicorn: a worker model a slow client cannot starve, and workers
that die with their master.

- :class:`DeadlineThreadWorker` is gunicorn's ``gthread`` worker (a thread pool per process; a
  connection that has sent nothing waits in the poller, not in a thread) with one addition: each
  request must arrive, headers and body, within ``request_timeout`` seconds, so a client that
  trickles bytes holds a thread for at most that long (plain gthread would hold it for as long as
  the client keeps sending). A silent or slow reader of the response is cut off the same way.
- :func:`die_with_parent`: on Linux a worker asks the kernel for SIGTERM when its master dies
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the master leaves no orphan serving stale code or
  holding the port; elsewhere the worker's own parent check does it on its next loop.
- Every answer is RFC 9457 problem+json, also those gunicorn gives before the app sees a request:
  a request line over ``--limit-request-line`` (414 ``request.line_too_long``), too many or too
  large header fields (431 ``request.headers_too_large``), malformed HTTP or chunked framing (400
  ``request.malformed_http``), a request that did not arrive within ``request_timeout`` (408
  ``request.timeout``; it was a silent close before). gunicorn's own error pages are HTML.
- Worker timeouts answer too. In gthread the arbiter's ``--timeout`` watches the worker's main loop,
  not its request threads, so a request that hangs (a lock, a pathological input) was never
  answered. Here the main loop answers a request still running after ``--timeout`` seconds with 503
  ``service.worker_timeout`` (``Retry-After``) and closes its connection; the thread's own late
  answer is discarded. A request still running ``--graceful-timeout`` seconds after that retires the
  worker (the arbiter starts a fresh one). When the arbiter aborts a worker (SIGABRT: its main loop
  was silent for ``--timeout``), the worker answers its in-flight requests the same way first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import http
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from gunicorn.http import errors as gerrors
from gunicorn.workers.gthread import ThreadWorker

from ca_service.errors import (
    CAServiceError,
    ExpectationUnmet,
    MalformedHTTP,
    RequestHeadersTooLarge,
    RequestLineTooLong,
    RequestTimeout,
    TransferCodingUnsupported,
    WorkerTimeout,
)

PR_SET_PDEATHSIG = 1


class _DeadlineSocket:
    """A client socket whose reads share one deadline per request; a read past it is EOF.

    It also records whether any byte of the current response was sent, so that the worker's main
    loop can answer an overdue request itself (:meth:`answer_instead`) without ever interleaving
    with a response the request thread already began; after that the thread's writes fail with
    EPIPE, which gthread treats as a client that went away.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._lock = threading.Lock()
        self.sent = False  # a byte of the current response went out
        self.timed_out = False  # a read of the current request hit the deadline
        self.answered = False  # the main loop answered for the request thread

    def restart(self) -> None:
        self._deadline = time.monotonic() + self._timeout
        self.sent = self.timed_out = False

    def _left(self) -> float | None:
        left = self._deadline - time.monotonic()
        return left if left > 0 else None

    def recv(self, n: int, *args: Any) -> bytes:
        left = self._left()
        if left is None or self.answered:
            self.timed_out = not self.answered
            return b""  # the request took too long: the parser sees the client go away
        self._sock.settimeout(left)
        try:
            return self._sock.recv(n, *args)
        except TimeoutError:
            self.timed_out = True
            return b""

    def _sending(self) -> None:
        if self.answered:
            raise BrokenPipeError(errno.EPIPE, "the request was answered by the worker (timeout)")
        self.sent = True

    def sendall(self, data: Any, *args: Any) -> None:
        with self._lock:
            self._sending()
            self._sock.settimeout(self._timeout)
            self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        with self._lock:
            self._sending()
            self._sock.settimeout(self._timeout)
            return self._sock.send(data, *args)

    def answer_instead(self, response: bytes) -> bool:
        """From another thread: send ``response`` and shut the connection, unless the request's own
        response has begun. Never blocks on the client (the answer is small and nothing else of
        this response is in the socket buffer)."""
        if not self._lock.acquire(timeout=0.5):
            return False  # the request thread is writing its own response right now
        try:
            if self.sent or self.answered:
                return False
            self.answered = True
            try:
                self._sock.send(response, socket.MSG_DONTWAIT)
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client is gone already
            return True
        finally:
            self._lock.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


# --- problem+json from the worker ------------------------------------------------------------------


def problem_response(err: CAServiceError, *, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response carrying ``err`` as RFC 9457 problem+json, the same document
    ``api/problems.py`` renders; the connection is closed after it."""
    body = json.dumps({"type": "/problems/" + err.code, "title": err.title, "status": err.status,
                       "detail": err.detail, "code": err.code}).encode()
    try:
        reason = http.HTTPStatus(err.status).phrase
    except ValueError:
        reason = "Error"
    lines = [f"HTTP/1.1 {err.status} {reason}", "Connection: close", "Content-Type: application/problem+json",
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "X-Content-Type-Options: nosniff"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def framing_problem(exc: BaseException, cfg: Any) -> CAServiceError | None:
    """The problem for an error gunicorn's parser raised before the app saw the request (None: not
    the client's fault). Details never echo the client's bytes."""
    if isinstance(exc, gerrors.LimitRequestLine):
        return RequestLineTooLong(f"the request line is longer than {cfg.limit_request_line} bytes")
    if isinstance(exc, gerrors.LimitRequestHeaders):
        return RequestHeadersTooLarge(f"more than {cfg.limit_request_fields} header fields, or one longer than "
                                      f"{cfg.limit_request_field_size} bytes")
    if isinstance(exc, gerrors.UnsupportedTransferCoding):
        return TransferCodingUnsupported("only the chunked transfer coding is supported")
    if isinstance(exc, gerrors.ExpectationFailed):
        return ExpectationUnmet("only Expect: 100-continue is supported")
    if isinstance(exc, (gerrors.InvalidResponseHeader, gerrors.InvalidResponseHeaderName)):
        return None  # the application's fault, not the client's
    if isinstance(exc, gerrors.ParseException):
        what = {gerrors.InvalidRequestLine: "request line", gerrors.InvalidRequestMethod: "method",
                gerrors.InvalidHTTPVersion: "HTTP version", gerrors.InvalidHeader: "header field",
                gerrors.InvalidHeaderName: "header field name", gerrors.ObsoleteFolding: "header field (obs-fold)",
                gerrors.InvalidChunkSize: "chunk size", gerrors.ChunkMissingTerminator: "chunk terminator",
                gerrors.InvalidChunkExtension: "chunk extension"}
        name = next((v for k, v in what.items() if isinstance(exc, k)), "request framing")
        return MalformedHTTP(f"invalid {name} (RFC 9112)")
    return None


def _internal() -> CAServiceError:
    return CAServiceError("An unexpected error occurred before the request reached the application")


@dataclass
class _InFlight:
    sock: _DeadlineSocket
    started: float
    method: str
    path: str


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with a per-request read deadline (``request_timeout`` in the gunicorn config env),
    problem+json for every error the worker answers itself, and answered worker timeouts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflight: dict[int, _InFlight] = {}
        self._inflight_lock = threading.RLock()  # also taken in the SIGABRT handler

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl:
            return super().handle(conn)
        if not isinstance(conn.sock, _DeadlineSocket):
            conn.sock = _DeadlineSocket(conn.sock, request_timeout())
        sock: _DeadlineSocket = conn.sock
        sock.restart()
        result = super().handle(conn)
        if sock.timed_out and not sock.sent and not sock.answered:
            # the request's headers or body did not arrive in time: say so rather than just close
            self._write(sock, RequestTimeout(f"the request did not arrive within {request_timeout():g} s"))
            return False
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        sock = conn.sock
        if not isinstance(sock, _DeadlineSocket):
            return super().handle_request(req, conn)
        key = id(sock)
        with self._inflight_lock:
            self._inflight[key] = _InFlight(sock, time.monotonic(), str(req.method), str(req.path)[:200])
        try:
            return super().handle_request(req, conn)
        finally:
            with self._inflight_lock:
                self._inflight.pop(key, None)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        err = framing_problem(exc, self.cfg)
        if err is not None and getattr(client, "timed_out", False):
            # the framing broke off because the deadline cut the read short, not because it was bad
            err = RequestTimeout(f"the request did not arrive within {request_timeout():g} s")
        if err is None:
            self.log.exception("Error handling request")
            err = _internal()
        else:
            peer = addr[0] if isinstance(addr, tuple) and addr else ""
            self.log.warning("Invalid request from ip=%s: %s (%s)", peer, err.code, type(exc).__name__)
        self._write(client, err)

    def _write(self, client: Any, err: CAServiceError) -> None:
        retry_after = getattr(err, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
        data = problem_response(err, headers=headers)
        try:
            client.sendall(data)
        except OSError:
            self.log.debug("Failed to send error message.")

    # -- worker timeouts -----------------------------------------------------------------------------

    def murder_pending(self) -> None:
        """Called by gthread's main loop about once a second; also answers overdue requests."""
        super().murder_pending()
        self.answer_overdue()

    def answer_overdue(self, *, everyone: bool = False) -> int:
        """Answer in-flight requests running longer than ``--timeout`` (all of them with ``everyone``)
        with 503 ``service.worker_timeout``; retire the worker when one is stuck far past that."""
        limit = float(self.cfg.timeout or 0)
        if limit <= 0 and not everyone:
            return 0
        now = time.monotonic()
        with self._inflight_lock:
            overdue = [f for f in self._inflight.values() if everyone or now - f.started > limit]
        answered = 0
        for f in overdue:
            if not f.sock.answered and not f.sock.sent:
                err = WorkerTimeout(f"the request ran for more than {limit:g} s and was abandoned" if not everyone
                                    else "the worker was stopped while the request ran")
                if f.sock.answer_instead(problem_response(err, headers={"Retry-After": str(err.retry_after)})):
                    answered += 1
                    self.log.warning("Worker timeout: answered %s %s after %.1f s with %s", f.method, f.path,
                                     now - f.started, err.code)
            elif (bool(getattr(self, "alive", False)) and limit > 0
                  and now - f.started > limit + float(self.cfg.graceful_timeout)):
                self.log.warning("A request thread is stuck (%s %s for %.0f s): restarting this worker",
                                 f.method, f.path, now - f.started)
                self.alive = False
        return answered

    def handle_abort(self, sig: int, frame: Any) -> None:
        """The arbiter's timeout (SIGABRT): answer what is in flight, then exit as gunicorn does."""
        try:
            self.answer_overdue(everyone=True)
        finally:
            super().handle_abort(sig, frame)


def request_timeout() -> float:
    return float(os.environ.get("CA_SERVICE_REQUEST_TIMEOUT_SECONDS", "30"))


def die_with_parent(master_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux). Returns
    whether it is armed; exits at once when the master is already gone (the race after fork)."""
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        armed = bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    if os.getppid() != master_pid:
        os._exit(0)
    return armed
