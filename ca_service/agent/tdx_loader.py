"""The trusted loader on a real TDX guest: extend RTMR3, keep the runtime log, send both logs as one.

1. Each component the loader loads becomes one ``ca-service.load.<role>`` runtime event
   (docs/event-log.md). Its digest is written to the kernel's RTMR3 attribute
   (``/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384``, Linux >= 6.16: a write of the
   48 bytes is TDG.MR.RTMR.EXTEND), and only after the extension succeeded is the event appended to
   the runtime log file, so the log never claims an extension that did not happen. (An extension
   whose log write then fails leaves a register the log cannot replay: the CA refuses, fail closed.)
2. The evidence is a TDX quote from configfs-tsm, and one dstack JSON event log: the TD's CCEL
   converted to that shape (``to_dstack_json``, as dstack's agent does), followed by the runtime
   events. RTMR0-2 replay from the firmware's records, RTMR3 from the loader's.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca_service.agent.client import AgentError
from ca_service.agent.loader import Measured
from ca_service.agent.tsm import CCEL_PATH, TSM_ROOT, TsmError, read_ccel, tsm_request
from ca_service.errors import EvidenceError
from ca_service.evidence.eventlog import parse_event_log, to_dstack_json
from ca_service.evidence.sim.eventlog import load_event

RTMR3_PATH = Path("/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384")
RUNTIME_LOG = Path("/run/ca-service/rtmr3-events.json")


def read_runtime_log(path: Path) -> list[dict[str, Any]]:
    """The runtime events recorded so far (``[]`` before the first)."""
    if not path.exists():
        return []
    events = json.loads(path.read_bytes())
    if not isinstance(events, list):
        raise AgentError(f"{path} is not a JSON list of runtime events")
    return events


def measure(components: Sequence[Measured], *, rtmr3: Path = RTMR3_PATH, log: Path = RUNTIME_LOG) -> list[str]:
    """Extend RTMR3 with each component, then record it; returns what was done, for the operator.

    Raises:
        AgentError: the RTMR3 attribute is missing or refuses the write.
    """
    events = read_runtime_log(log)
    notes = []
    for c in components:
        event = load_event(c.role, c.digest)
        try:
            with rtmr3.open("wb", buffering=0) as fh:  # one write of the 48 bytes, as the ABI wants
                fh.write(event.digest)
        except OSError as exc:
            raise AgentError(f"cannot extend RTMR3 through {rtmr3}: {exc.strerror or exc}") from exc
        events.append(event.to_json())
        _write(log, events)
        notes.append(f"measured {c.role} {c.digest} into RTMR3")
    return notes


def _write(path: Path, events: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(events, separators=(",", ":")).encode())
    os.replace(tmp, path)


def combined_log(ccel: bytes, runtime: Sequence[dict[str, Any]]) -> bytes:
    """The TD's CCEL as dstack JSON, then the loader's runtime events: the one log the CA replays.

    Raises:
        AgentError: the CCEL cannot be parsed (its ``evidence.event_log_*`` code in the message).
    """
    try:
        boot = to_dstack_json(parse_event_log(ccel))
    except EvidenceError as exc:
        raise AgentError(f"the TD's CCEL cannot be read: [{exc.code}] {exc.detail}") from exc
    return json.dumps([*boot, *runtime], separators=(",", ":")).encode()


@dataclass
class TdxLoaderSource:
    """``source(report_data) -> ("tdx-quote", quote, {"event_log": ...})`` for ``request_certificate``."""

    root: Path = TSM_ROOT
    ccel_path: Path = CCEL_PATH
    runtime_log: Path = RUNTIME_LOG
    notes: list[str] = field(default_factory=list)

    def __call__(self, report_data: bytes) -> tuple[str, bytes, dict[str, Any]]:
        try:
            rep = tsm_request(report_data, self.root)
        except (OSError, TsmError) as exc:
            raise AgentError(f"configfs-tsm at {self.root}: {exc}") from exc
        if rep.kind != "tdx-quote":
            raise AgentError(f"a loader measures into RTMR3, which {rep.kind} evidence has not "
                             "(SEV-SNP: the loader digest is HOST_DATA or the launch measurement; use agent request)")
        ccel = read_ccel(self.ccel_path)
        if ccel is None:
            raise AgentError(f"a loader certificate needs the TD's event log, but {self.ccel_path} does not exist")
        runtime = read_runtime_log(self.runtime_log)
        log = combined_log(ccel, runtime)
        self.notes.append(f"tdx-quote from configfs-tsm ({len(rep.outblob)} bytes); event log: CCEL from "
                          f"{self.ccel_path} + {len(runtime)} runtime events from {self.runtime_log}")
        return rep.kind, rep.outblob, {"event_log": base64.b64encode(log).decode()}
