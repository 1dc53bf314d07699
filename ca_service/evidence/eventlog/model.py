"""Event-log value objects and the TCG event type names.

Event types: TCG PC Client Platform Firmware Profile (PFP) Specification, section 10.4.1
"Event Types"; the EFI types are ``EV_EFI_EVENT_BASE`` (0x80000000) plus an offset. dstack's runtime
events use type 0x08000001 (dstack ``EventLogVersion`` V1).
"""

from __future__ import annotations

from dataclasses import dataclass

SHA384_LEN = 48
RTMR_COUNT = 4

EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
DSTACK_RUNTIME_EVENT = 0x08000001
_EFI = 0x80000000

EVENT_TYPES: dict[int, str] = {
    0x00: "EV_PREBOOT_CERT", 0x01: "EV_POST_CODE", 0x02: "EV_UNUSED", 0x03: "EV_NO_ACTION",
    0x04: "EV_SEPARATOR", 0x05: "EV_ACTION", 0x06: "EV_EVENT_TAG", 0x07: "EV_S_CRTM_CONTENTS",
    0x08: "EV_S_CRTM_VERSION", 0x09: "EV_CPU_MICROCODE", 0x0A: "EV_PLATFORM_CONFIG_FLAGS",
    0x0B: "EV_TABLE_OF_DEVICES", 0x0C: "EV_COMPACT_HASH", 0x0D: "EV_IPL", 0x0E: "EV_IPL_PARTITION_DATA",
    0x0F: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG", 0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS", 0x13: "EV_POST_CODE2",
    _EFI + 0x01: "EV_EFI_VARIABLE_DRIVER_CONFIG", _EFI + 0x02: "EV_EFI_VARIABLE_BOOT",
    _EFI + 0x03: "EV_EFI_BOOT_SERVICES_APPLICATION", _EFI + 0x04: "EV_EFI_BOOT_SERVICES_DRIVER",
    _EFI + 0x05: "EV_EFI_RUNTIME_SERVICES_DRIVER", _EFI + 0x06: "EV_EFI_GPT_EVENT",
    _EFI + 0x07: "EV_EFI_ACTION", _EFI + 0x08: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    _EFI + 0x09: "EV_EFI_HANDOFF_TABLES", _EFI + 0x0A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    _EFI + 0x0B: "EV_EFI_HANDOFF_TABLES2", _EFI + 0x0C: "EV_EFI_VARIABLE_BOOT2",
    _EFI + 0x0D: "EV_EFI_GPT_EVENT2", _EFI + 0x10: "EV_EFI_HCRTM_EVENT",
    _EFI + 0xE0: "EV_EFI_VARIABLE_AUTHORITY", _EFI + 0xE1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    _EFI + 0xE2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
    DSTACK_RUNTIME_EVENT: "DSTACK_RUNTIME_EVENT",
}


def type_name(type_id: int) -> str:
    """The TCG name of an event type; unknown types are kept as ``UNKNOWN(0x...)``."""
    return EVENT_TYPES.get(type_id, f"UNKNOWN(0x{type_id:08x})")


@dataclass(frozen=True, slots=True)
class Event:
    """One record of an event log.

    ``register`` is the RTMR index (0..3) the record extends, or None for a record that extends
    nothing (``EV_NO_ACTION``). ``digest`` is the SHA-384 value extended (empty when nothing is).
    ``name`` is a runtime event's name (dstack JSON), else None.
    """

    index: int
    register: int | None
    type_id: int
    digest: bytes
    data: bytes
    name: str | None = None

    @property
    def type(self) -> str:
        return type_name(self.type_id)


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed log: its records in order, the format it came in, and the bytes' SHA-256."""

    format: str
    events: tuple[Event, ...]
    sha256: str


@dataclass(frozen=True, slots=True)
class ImaEntry:
    """One IMA runtime measurement (Linux ``ima_template_entry``), SHA-384 bank."""

    index: int
    pcr: int
    template_hash: bytes
    template: str
    fields: tuple[str, ...]

    @property
    def violation(self) -> bool:
        # Linux ima_add_violation(): a violation is logged with a zero digest; the register is
        # extended with all-ones instead (ima_pcr_extend of the "invalidated" digest).
        return self.template_hash == bytes(len(self.template_hash))


@dataclass(frozen=True, slots=True)
class ImaLog:
    format: str
    entries: tuple[ImaEntry, ...]
    sha256: str
