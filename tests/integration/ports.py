"""A loopback port for a server a test starts in another process (``ca-service serve``, Anvil, PostgreSQL).

``bind(("127.0.0.1", 0))`` hands out a port of the kernel's ephemeral range, and so does every outgoing
``connect()``. Between the probe closing and the server binding (a process start: seconds on a loaded
box), the suite's own HTTP and database clients, hundreds of connections a second under xdist, may take
that port as their local end, and the server then fails to start ("Address already in use"). A port
below the ephemeral range is never a connection's local end: one is drawn at random there (so two xdist
workers do not draw the same) and probed free before it is handed out.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_rng = random.Random()  # its own state: hypothesis seeds the global one for reproducibility
LOWEST = 10_000


def ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; IANA's is 49152-65535


def _probe(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    lo, _ = ephemeral_range()
    if lo - LOWEST >= 1000:
        for _ in range(200):
            port = _rng.randrange(LOWEST, lo)
            if _probe(port):
                return port
    with socket.socket() as s:  # no room below the range (or nothing free there): the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
