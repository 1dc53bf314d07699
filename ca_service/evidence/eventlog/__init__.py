"""TDX event logs (CCEL, dstack JSON, IMA): parse, replay to RTMR0-3, claims. See docs/event-log.md."""

from __future__ import annotations

from dataclasses import replace

from ca_service.errors import EventLogUnsupported
from ca_service.evidence.base import Check, VerifiedEvidence
from ca_service.evidence.eventlog.dstack import runtime_digest, to_dstack_json
from ca_service.evidence.eventlog.ima import parse_ima
from ca_service.evidence.eventlog.model import Event, EventLog, ImaLog, type_name
from ca_service.evidence.eventlog.replay import Replay, claims, parse_event_log, replay

__all__ = ["Event", "EventLog", "ImaLog", "Replay", "apply_event_log", "claims", "parse_event_log", "parse_ima",
           "replay", "rtmrs_of", "runtime_digest", "to_dstack_json", "type_name"]

# Which evidence types carry RTMRs, and under which claim names (the family decides; DESIGN.md 16).
_RTMR_CLAIMS: dict[str, tuple[str, str, str, str]] = {
    "tdx-quote": ("rtmr0", "rtmr1", "rtmr2", "rtmr3"),
    "sim": ("rtmr0", "rtmr1", "rtmr2", "rtmr3"),
}


def rtmrs_of(ve: VerifiedEvidence) -> tuple[bytes, ...]:
    """RTMR0-3 of verified evidence.

    Raises:
        EventLogUnsupported: ``evidence.event_log_unsupported`` for a type without RTMRs.
    """
    names = _RTMR_CLAIMS.get(ve.kind)
    if names is None or not all(isinstance(ve.claims.get(n), str) for n in names):
        raise EventLogUnsupported(f"an event log cannot be replayed for {ve.kind!r} evidence (no RTMRs)",
                                  field="event_log")
    return tuple(bytes.fromhex(ve.claims[n]) for n in names)


def apply_event_log(ve: VerifiedEvidence, event_log: bytes, ima_log: bytes | None = None) -> VerifiedEvidence:
    """Replay ``event_log`` (and ``ima_log`` into RTMR2) against the RTMRs of *verified* evidence.

    Returns ``ve`` with the event-log claims added and an ``event_log.replay`` check.

    Raises:
        EventLogMalformed, EventLogInconsistent, EventLogUnsupported, EventLogMismatch
        (``evidence.event_log_*``; a mismatch names the RTMR in ``field``).
    """
    quote_rtmrs = rtmrs_of(ve)
    log = parse_event_log(event_log)
    ima = parse_ima(ima_log) if ima_log is not None else None
    rep = replay(log, quote_rtmrs, ima)
    new_claims = claims(rep)
    n = len(new_claims["event_log"]) + (len(ima.entries) if ima else 0)
    check = Check("event_log.replay", True, f"RTMR0-3 replayed from {n} events ({new_claims['event_log_format']})")
    return replace(ve, claims={**ve.claims, **new_claims}, checks=(*ve.checks, check))
