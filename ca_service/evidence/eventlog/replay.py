"""Replay an event log to RTMR0-3, compare with the evidence's RTMRs, and derive the claims.

RTMR extend (Intel TDX Module spec, TDG.MR.RTMR.EXTEND): ``RTMR = SHA-384(RTMR || value)`` from 48
zero bytes. Only a log whose replay equals every RTMR of the signed evidence yields claims.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ca_service.errors import EventLogMalformed, EventLogMismatch
from ca_service.evidence.eventlog import ima as ima_mod
from ca_service.evidence.eventlog.ccel import parse_ccel
from ca_service.evidence.eventlog.describe import describe
from ca_service.evidence.eventlog.dstack import parse_dstack_json
from ca_service.evidence.eventlog.model import DSTACK_RUNTIME_EVENT, RTMR_COUNT, SHA384_LEN, EventLog, ImaLog

LOAD_PREFIX = "ca-service.load."
_ROLE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")


def parse_event_log(data: bytes) -> EventLog:
    """A CCEL (binary) or dstack JSON log, told apart by the first non-blank byte (``[`` = JSON).

    Raises:
        EventLogMalformed, EventLogInconsistent, EventLogUnsupported (``evidence.event_log_*``).
    """
    data = bytes(data)
    if not data:
        raise EventLogMalformed("event log is empty", field="event_log")
    if data.lstrip()[:1] == b"[":
        return parse_dstack_json(data)
    return parse_ccel(data)


@dataclass(frozen=True)
class Replay:
    """The replayed registers, with the quote's, and the inputs."""

    log: EventLog
    ima: ImaLog | None
    replayed: tuple[bytes, ...]
    quote: tuple[bytes, ...]

    @property
    def matches(self) -> tuple[bool, ...]:
        return tuple(hmac.compare_digest(a, b) for a, b in zip(self.replayed, self.quote, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {"format": self.log.format + ("+ima" if self.ima else ""),
                "rtmrs": [{"rtmr": i, "replayed": r.hex(), "quote": q.hex(), "match": m}
                          for i, (r, q, m) in enumerate(zip(self.replayed, self.quote, self.matches, strict=True))]}


def replay(log: EventLog, quote_rtmrs: Sequence[bytes], ima: ImaLog | None = None) -> Replay:
    """Extend every event of ``log`` (then IMA's entries into RTMR2) from zero; no comparison raises."""
    regs = [bytes(SHA384_LEN) for _ in range(RTMR_COUNT)]
    for e in log.events:
        if e.register is not None:
            regs[e.register] = hashlib.sha384(regs[e.register] + e.digest).digest()
    if ima is not None:
        for entry in ima.entries:
            regs[ima_mod.IMA_RTMR] = hashlib.sha384(regs[ima_mod.IMA_RTMR] + ima_mod.extend_value(entry)).digest()
    return Replay(log=log, ima=ima, replayed=tuple(regs), quote=tuple(bytes(q) for q in quote_rtmrs))


def _loaded(log: EventLog) -> list[dict[str, str]]:
    """``ca-service.load.<role>`` runtime events: payload = UTF-8 ``alg:hex`` (docs/event-log.md)."""
    out: list[dict[str, str]] = []
    for e in log.events:
        if e.name is None or not e.name.startswith(LOAD_PREFIX) or e.type_id != DSTACK_RUNTIME_EVENT:
            continue
        role = e.name[len(LOAD_PREFIX):]
        try:
            digest = e.data.decode("ascii")
        except UnicodeDecodeError:
            digest = ""
        if not _ROLE.match(role) or not _DIGEST.match(digest):
            raise EventLogMalformed(f"event {e.index} ({e.name!r}): a load event is ca-service.load.<role> with "
                                    "payload 'sha384:<hex>'", field=f"event[{e.index}]")
        if e.register != 3:
            raise EventLogMalformed(f"event {e.index}: load events extend RTMR3", field=f"event[{e.index}].imr")
        out.append({"role": role, "digest": digest})
    return out


def claims(rep: Replay) -> dict[str, Any]:
    """The claims of a matching replay (docs/event-log.md, "Claims").

    Raises:
        EventLogMismatch: ``evidence.event_log_mismatch`` naming the first RTMR that differs.
        EventLogMalformed: a ``ca-service.load.*`` event that is not of the documented form.
    """
    for i, ok in enumerate(rep.matches):
        if not ok:
            raise EventLogMismatch(f"the event log does not replay to RTMR{i} of the evidence "
                                   f"(replayed {rep.replayed[i].hex()[:16]}..., quote {rep.quote[i].hex()[:16]}...)",
                                   field=f"rtmr{i}")
    events = []
    for e in rep.log.events:
        if e.register is None:
            continue
        item: dict[str, Any] = {"imr": e.register, "type": e.type, "type_id": e.type_id, "digest": e.digest.hex(),
                                "description": describe(e),
                                # runtime events: the digest was recomputed from type, name and payload
                                "digest_of_data": e.name is not None
                                or hmac.compare_digest(hashlib.sha384(e.data).digest(), e.digest),
                                # a TCG record's event type is not extended into any register: only a
                                # runtime event's (its digest is recomputed from type, name and payload)
                                # is measured; elsewhere type and description are what the log says
                                "type_measured": e.name is not None}
        if e.name is not None:
            item["name"] = e.name
            item["payload"] = e.data.hex()
        events.append(item)
    loaded = _loaded(rep.log)
    out: dict[str, Any] = {
        "event_log": events,
        "event_log_format": rep.log.format + ("+ima" if rep.ima else ""),
        "event_log_sha256": rep.log.sha256,
        "loaded_digests": [x["digest"] for x in loaded],
        "loaded": loaded,
        "runtime_events": [{"name": e.name, "payload": e.data.hex()} for e in rep.log.events
                           if e.name is not None and e.type_id == DSTACK_RUNTIME_EVENT],
        # RTMR3 events whose digest is not recomputed from a runtime event's type, name and payload: an
        # event type is not measured, so relabelling a runtime event hides it from runtime_events while
        # the replay still matches. A rule over the runtime events as a whole cannot hold while any remain.
        "rtmr3_unverified_events": sum(1 for e in rep.log.events if e.register == 3
                                       and not (e.name is not None and e.type_id == DSTACK_RUNTIME_EVENT)),
    }
    if rep.ima is not None:
        out["ima_log"] = {"entries": len(rep.ima.entries), "sha256": rep.ima.sha256}
    return out
