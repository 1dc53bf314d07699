"""Short human descriptions of event data, for the types whose data layout the TCG PFP defines.

These are what the log *says*; ``digest_of_data`` in the claims tells whether the data is what was
hashed. Layouts (TCG PC Client PFP, section 10.2 and 10.4): UEFI_VARIABLE_DATA (10.2.3), the
*_BLOB2 / *_TABLES2 descriptions (10.2.5, 10.2.6), UEFI_IMAGE_LOAD_EVENT (10.2.4), TCG_PCClientTaggedEvent
(10.4.2). A description never raises: data that does not fit its type is described by its size.
"""

from __future__ import annotations

import struct

from ca_service.evidence.eventlog.model import Event

MAX_TEXT = 120


def _text(data: bytes) -> str | None:
    body = data.rstrip(b"\x00")
    if not body or any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) or b > 0x7E for b in body):
        return None
    text = " ".join(body.decode("ascii").replace("\x00", " ").split())
    return text[:MAX_TEXT] + ("..." if len(text) > MAX_TEXT else "")


def _utf16(data: bytes) -> str:
    return data.decode("utf-16-le", "replace").rstrip("\x00")


def _variable(data: bytes) -> str | None:
    # UEFI_VARIABLE_DATA: VariableName GUID[16], UnicodeNameLength u64, VariableDataLength u64, UnicodeName
    if len(data) < 32:
        return None
    name_len, value_len = struct.unpack_from("<QQ", data, 16)
    if 32 + 2 * name_len > len(data):
        return None
    return f"variable {_utf16(data[32:32 + 2 * name_len])} ({value_len} bytes)"


def _blob2(data: bytes) -> str | None:
    # UEFI_PLATFORM_FIRMWARE_BLOB2 / UEFI_HANDOFF_TABLE_POINTERS2: BlobDescriptionSize u8, description
    if not data or 1 + data[0] > len(data):
        return None
    return _text(data[1:1 + data[0]])


def _file_path(device_path: bytes) -> str | None:
    # EFI device path nodes: Type u8, SubType u8, Length u16; media (4) / file path (4) = UTF-16 path
    off = 0
    paths: list[str] = []
    while off + 4 <= len(device_path):
        node_type, subtype, length = struct.unpack_from("<BBH", device_path, off)
        if length < 4 or off + length > len(device_path) or node_type == 0x7F:
            break
        if node_type == 4 and subtype == 4:
            paths.append(_utf16(device_path[off + 4:off + length]))
        off += length
    return "\\".join(p.strip("\\") for p in paths) or None


def _image(data: bytes) -> str | None:
    # UEFI_IMAGE_LOAD_EVENT: location u64, length u64, link-time address u64, device path length u64, path
    if len(data) < 32:
        return None
    length, _link, dp_len = struct.unpack_from("<QQQ", data, 8)
    path = _file_path(data[32:32 + dp_len]) if 32 + dp_len <= len(data) else None
    return f"EFI image {path}" if path else f"EFI image ({length} bytes)"


def _tagged(data: bytes) -> str | None:
    # TCG_PCClientTaggedEvent: taggedEventID u32, taggedEventDataSize u32, taggedEventData
    if len(data) < 8:
        return None
    tag, size = struct.unpack_from("<II", data, 0)
    text = _text(data[8:8 + size]) if 8 + size <= len(data) else None
    return f"tag 0x{tag:08x}: {text}" if text else f"tag 0x{tag:08x}"


def describe(event: Event) -> str:
    """A short description of ``event`` (at most ~120 characters)."""
    t, data = event.type, event.data
    if event.name is not None:
        if not data:
            return event.name
        return f"{event.name}: {_text(data) or data.hex()[:64]}"
    out: str | None = None
    if t == "EV_SEPARATOR":
        out = "separator (error)" if data == b"\x01\x00\x00\x00" else "separator"
    elif t.startswith("EV_EFI_VARIABLE"):
        out = _variable(data)
    elif t in ("EV_EFI_PLATFORM_FIRMWARE_BLOB2", "EV_EFI_HANDOFF_TABLES2"):
        out = _blob2(data)
    elif t in ("EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_BOOT_SERVICES_DRIVER", "EV_EFI_RUNTIME_SERVICES_DRIVER"):
        out = _image(data)
    elif t in ("EV_EFI_GPT_EVENT", "EV_EFI_GPT_EVENT2"):
        out = "GPT partition table"
    elif t == "EV_EVENT_TAG":
        out = _tagged(data)
    elif t == "EV_S_CRTM_VERSION":
        out = f"S-CRTM version {_utf16(data)}"
    elif t == "EV_NO_ACTION" and data.startswith(b"Spec ID Event03"):
        out = "Spec ID Event03 (log header)"
    return out or _text(data) or f"{len(data)} bytes"
