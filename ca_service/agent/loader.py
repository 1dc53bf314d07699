"""The trusted loader's side of flow 2 (``ca-service agent loader-request``).

Inside a certified CVM the loader measures every component it loads (``ROLE=PATH``: SHA-384 of
the file; or ``ROLE=sha384:<hex>``), extends RTMR3 with one ``ca-service.load.<role>`` runtime
event each (docs/event-log.md), and asks the CA for a certificate for a fresh key of its own,
with fresh evidence bound to that key (the same binding as flow 1) and its event log beside it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ca_service.evidence.sim.attester import SimTd
from ca_service.evidence.sim.eventlog import DIGEST_PATTERN, ROLE_PATTERN

CHUNK = 1 << 20


@dataclass(frozen=True)
class Measured:
    """One component the loader measured: its role (``engine``, ``dataset``, ``args``...) and digest."""

    role: str
    digest: str


def file_digest(path: Path) -> str:
    """``sha384:<hex>`` of a file, read in chunks (engine images are large)."""
    h = hashlib.sha384()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return f"sha384:{h.hexdigest()}"


def parse_component(text: str) -> Measured:
    """``ROLE=PATH`` or ``ROLE=<alg>:<hex>``.

    Raises:
        ValueError: a bad role, or neither a file nor a digest.
    """
    role, sep, value = text.partition("=")
    if not sep or not ROLE_PATTERN.fullmatch(role):
        raise ValueError(f"{text!r}: expected ROLE=PATH or ROLE=sha384:<hex>, ROLE matching {ROLE_PATTERN.pattern}")
    if re.fullmatch(DIGEST_PATTERN, value):
        return Measured(role, value)
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{value!r} is neither a file nor a sha256:/sha384:/sha512: digest")
    return Measured(role, file_digest(path))


def measure_into(td: SimTd, components: Sequence[Measured]) -> None:
    """Extend the sim TD's RTMR3 with each component, in load order."""
    for c in components:
        td.measure(c.role, c.digest)


def sim_source(td: SimTd) -> Any:
    """An evidence source for :func:`ca_service.agent.client.request_certificate`: the sim report
    (RTMRs replayed from the TD's log) and the log itself as ``event_log``."""
    def source(report_data: bytes) -> tuple[str, bytes, dict[str, str]]:
        report, log = td.evidence(report_data)
        return "sim", report, {"event_log": base64.b64encode(log).decode()}
    return source
