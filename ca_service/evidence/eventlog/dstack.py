"""dstack-style JSON event logs, and the runtime-event digest rule (dstack ``EventLogVersion`` V1).

A JSON list of ``{"imr", "event_type", "digest", "event", "event_payload"}`` as dstack's guest agent
returns it (``GetQuote``): ``imr`` is zero-based (0..3 = RTMR0..3, unlike CCEL's 1-based CC MR
index); ``digest`` and ``event_payload`` are hex. Boot events are the CCEL's records converted (no
Spec ID header, no EV_NO_ACTION). Runtime events (type 0x08000001) extend
``SHA-384(u32_le(event_type) || ":" || event || ":" || payload)``; the digest is recomputed here,
so a name or payload cannot be swapped under a digest that replays.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

from ca_service import boundedjson
from ca_service.errors import EventLogInconsistent, EventLogMalformed
from ca_service.evidence.eventlog.model import (
    DSTACK_RUNTIME_EVENT,
    EV_NO_ACTION,
    RTMR_COUNT,
    SHA384_LEN,
    Event,
    EventLog,
)

MAX_EVENTS = 10_000
MAX_NAME = 256
_REQUIRED = ("imr", "event_type", "digest", "event", "event_payload")


def runtime_digest(name: str, payload: bytes, event_type: int = DSTACK_RUNTIME_EVENT) -> bytes:
    """The value a runtime event extends: SHA-384(u32_le(type) || ":" || name || ":" || payload)."""
    return hashlib.sha384(struct.pack("<I", event_type) + b":" + name.encode("utf-8") + b":" + payload).digest()


def _hex(value: Any, what: str, index: int) -> bytes:
    if not isinstance(value, str):
        raise EventLogMalformed(f"event {index}: {what} is not a hex string", field=f"event[{index}].{what}")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise EventLogMalformed(f"event {index}: {what} is not hex", field=f"event[{index}].{what}") from exc


def _int(value: Any, what: str, index: int, upper: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
        raise EventLogMalformed(f"event {index}: {what} is not an integer in range", field=f"event[{index}].{what}")
    return value


def parse_dstack_json(data: bytes) -> EventLog:
    """Parse a dstack JSON event log.

    Raises:
        EventLogMalformed: ``evidence.event_log_malformed``: not JSON, not a list of events, a field
            missing or of the wrong type, ``imr`` outside 0..3, a digest that is not 48 bytes.
        EventLogInconsistent: ``evidence.event_log_inconsistent``: a runtime event's digest is not
            the hash of its type, name and payload.
    """
    data = bytes(data)
    try:
        doc = boundedjson.loads(data, limit=4)
    except ValueError as exc:
        raise EventLogMalformed("event log is not valid JSON", field="event_log") from exc
    if not isinstance(doc, list):
        raise EventLogMalformed("a JSON event log is a list of events", field="event_log")
    if len(doc) > MAX_EVENTS:
        raise EventLogMalformed(f"event log has more than {MAX_EVENTS} events", field="event_log")
    events: list[Event] = []
    for index, item in enumerate(doc):
        if not isinstance(item, dict) or any(k not in item for k in _REQUIRED):
            raise EventLogMalformed(f"event {index} lacks one of {', '.join(_REQUIRED)}", field=f"event[{index}]")
        imr = _int(item["imr"], "imr", index, RTMR_COUNT)
        etype = _int(item["event_type"], "event_type", index, 1 << 32)
        digest = _hex(item["digest"], "digest", index)
        payload = _hex(item["event_payload"], "event_payload", index)
        name = item["event"]
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise EventLogMalformed(f"event {index}: event name is not a short string", field=f"event[{index}].event")
        if len(digest) != SHA384_LEN:
            raise EventLogMalformed(f"event {index}: digest is not 48 bytes (SHA-384)", field=f"event[{index}].digest")
        if etype == EV_NO_ACTION:
            events.append(Event(index=index, register=None, type_id=etype, digest=b"", data=payload))
            continue
        if etype == DSTACK_RUNTIME_EVENT:
            if not hmac.compare_digest(runtime_digest(name, payload, etype), digest):
                raise EventLogInconsistent(f"runtime event {index} ({name!r}): digest is not "
                                           "SHA-384(type:name:payload)", field=f"event[{index}].digest")
            events.append(Event(index=index, register=imr, type_id=etype, digest=digest, data=payload, name=name))
            continue
        events.append(Event(index=index, register=imr, type_id=etype, digest=digest, data=payload))
    return EventLog(format="dstack-json", events=tuple(events), sha256=hashlib.sha256(data).hexdigest())


def to_dstack_json(log: EventLog) -> list[dict[str, Any]]:
    """The extended events of ``log`` in the dstack JSON shape (how dstack converts a CCEL), so a loader
    can append its runtime events to the boot events of its TD's CCEL and submit one JSON log."""
    out: list[dict[str, Any]] = []
    for e in log.events:
        if e.register is None:
            continue
        out.append({"imr": e.register, "event_type": e.type_id, "digest": e.digest.hex(),
                    "event": e.name or "", "event_payload": e.data.hex()})
    return out
