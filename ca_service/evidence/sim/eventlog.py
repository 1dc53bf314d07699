"""The sim TEE's event log: what an INSECURE sim TD measured, in the dstack JSON shape (PURE).

docs/event-log.md defines the shape every TDX-like TEE here uses, so one replay serves real TDs and
the sim: a JSON list of ``{"imr", "event_type", "digest", "event", "event_payload"}`` (hex digest
and payload), ``imr`` 0..3 = RTMR0..3. The sim TD's RTMRs are the SHA-384 replay of its log, from 48
zero bytes (Intel TDX Module spec, TDG.MR.RTMR.EXTEND: ``RTMR = SHA-384(RTMR || digest)``).

- Boot events (imr 0..2) stand for firmware, kernel and command line: their digest is SHA-384 of
  the payload, as a measured boot records it.
- Runtime events (imr 3) are what the trusted loader measures: dstack ``EventLogVersion`` V1,
  ``event_type`` 0x08000001, ``digest = SHA-384(u32_le(event_type) || ":" || name || ":" || payload)``;
  a component the loader loaded is the event ``ca-service.load.<role>`` whose payload is the UTF-8
  text ``sha384:<hex>`` (the component's digest).

This module only builds logs (the sim TD's side). Verification replays them with the shared
event-log code, never trusting the digests written here.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

RUNTIME_EVENT_TYPE = 0x08000001  # dstack runtime event (docs/event-log.md)
EV_POST_CODE = 0x00000001  # TCG PC Client PFP, table 9: a boot component the firmware measured
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EVENT_TAG = 0x00000006
LOAD_PREFIX = "ca-service.load."
ROLE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
DIGEST_PATTERN = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
RTMR_COUNT = 4
ZERO = b"\x00" * 48


@dataclass(frozen=True)
class SimEvent:
    """One extended event of the sim TD's log."""

    imr: int
    event_type: int
    event: str
    payload: bytes
    digest: bytes

    def to_json(self) -> dict[str, Any]:
        return {"imr": self.imr, "event_type": self.event_type, "digest": self.digest.hex(), "event": self.event,
                "event_payload": self.payload.hex()}


def runtime_digest(name: str, payload: bytes, event_type: int = RUNTIME_EVENT_TYPE) -> bytes:
    """dstack V1 runtime-event digest: ``SHA-384(u32_le(type) || ":" || name || ":" || payload)``."""
    return hashlib.sha384(struct.pack("<I", event_type) + b":" + name.encode() + b":" + payload).digest()


def boot_event(imr: int, event_type: int, description: str, data: bytes) -> SimEvent:
    """A measured-boot event: the digest is SHA-384 of ``data``, which is also its payload."""
    if not 0 <= imr <= 2:
        raise ValueError("boot events go to RTMR0..2")
    return SimEvent(imr, event_type, description, data, hashlib.sha384(data).digest())


def runtime_event(name: str, payload: bytes) -> SimEvent:
    """A runtime event in RTMR3."""
    return SimEvent(3, RUNTIME_EVENT_TYPE, name, payload, runtime_digest(name, payload))


def load_event(role: str, digest: str) -> SimEvent:
    """The loader measured a component: ``ca-service.load.<role>`` with payload ``<alg>:<hex>``.

    Raises:
        ValueError: a role outside ``[a-z0-9][a-z0-9-]{0,31}`` or a digest not ``sha256|sha384|sha512:<hex>``.
    """
    if not ROLE_PATTERN.fullmatch(role):
        raise ValueError(f"role {role!r} must match {ROLE_PATTERN.pattern}")
    if not DIGEST_PATTERN.fullmatch(digest):
        raise ValueError(f"digest {digest!r} must be sha256:/sha384:/sha512: and lower-case hex")
    return runtime_event(LOAD_PREFIX + role, digest.encode())


def sim_boot_events(image: str = "ca-service sim CVM image v1") -> tuple[SimEvent, ...]:
    """The fixed measured boot of a sim TD booting ``image``: firmware (RTMR0), kernel (RTMR1),
    command line and initrd (RTMR2). The same image always gives the same RTMR0..2."""
    return (
        boot_event(0, EV_EFI_PLATFORM_FIRMWARE_BLOB2, "sim TDVF", f"{image}/firmware".encode()),
        boot_event(1, EV_EFI_BOOT_SERVICES_APPLICATION, "sim kernel", f"{image}/kernel".encode()),
        boot_event(2, EV_EVENT_TAG, "sim kernel command line", f"{image}/cmdline console=hvc0".encode()),
        boot_event(2, EV_EVENT_TAG, "sim initrd", f"{image}/initrd".encode()),
    )


def replay(events: Iterable[SimEvent]) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 after extending every event's digest, in log order, from zero."""
    regs = [ZERO] * RTMR_COUNT
    for e in events:
        if not 0 <= e.imr < RTMR_COUNT or len(e.digest) != 48:
            raise ValueError("a sim event extends RTMR0..3 with a SHA-384 digest")
        regs[e.imr] = hashlib.sha384(regs[e.imr] + e.digest).digest()
    return regs[0], regs[1], regs[2], regs[3]


def to_json_bytes(events: Sequence[SimEvent]) -> bytes:
    """The log as the sim TD hands it out: a compact JSON list (dstack shape)."""
    return json.dumps([e.to_json() for e in events], separators=(",", ":")).encode()


def from_json_bytes(data: bytes) -> tuple[SimEvent, ...]:
    """Read back a sim TD's own log (the TD's state file), re-deriving nothing.

    Raises:
        ValueError: not a list of dstack-shaped events.
    """
    raw = json.loads(data)
    if not isinstance(raw, list):
        raise ValueError("a sim event log is a JSON list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("a sim event is a JSON object")
        out.append(SimEvent(int(item["imr"]), int(item["event_type"]), str(item["event"]),
                            bytes.fromhex(item["event_payload"]), bytes.fromhex(item["digest"])))
    return tuple(out)
