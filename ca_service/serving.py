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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

PR_SET_PDEATHSIG = 1


class _DeadlineSocket:
    """A client socket whose reads share one deadline per request; a read past it is EOF."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout

    def restart(self) -> None:
        self._deadline = time.monotonic() + self._timeout

    def _left(self) -> float | None:
        left = self._deadline - time.monotonic()
        return left if left > 0 else None

    def recv(self, n: int, *args: Any) -> bytes:
        left = self._left()
        if left is None:
            return b""  # the request took too long: the parser sees the client go away
        self._sock.settimeout(left)
        try:
            return self._sock.recv(n, *args)
        except TimeoutError:
            return b""

    def sendall(self, data: Any, *args: Any) -> None:
        self._sock.settimeout(self._timeout)
        self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        self._sock.settimeout(self._timeout)
        return self._sock.send(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with a per-request read deadline (``request_timeout`` in the gunicorn config env)."""

    def handle(self, conn: Any) -> Any:
        if not self.cfg.is_ssl:
            if not isinstance(conn.sock, _DeadlineSocket):
                conn.sock = _DeadlineSocket(conn.sock, request_timeout())
            conn.sock.restart()
        return super().handle(conn)


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
