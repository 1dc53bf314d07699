"""Write event logs byte by byte, the way firmware and the kernel lay them out (for mutation tests)."""

from __future__ import annotations

import hashlib
import json
import struct

from ca_service.evidence.eventlog import runtime_digest

SHA1, SHA256, SHA384 = 0x0004, 0x000B, 0x000C
SIZES = {SHA1: 20, SHA256: 32, SHA384: 48}


def spec_id(algs: tuple[int, ...] = (SHA384,), vendor: bytes = b"") -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    body += b"".join(struct.pack("<HH", a, SIZES[a]) for a in algs)
    return body + bytes([len(vendor)]) + vendor


def header(algs: tuple[int, ...] = (SHA384,)) -> bytes:
    ev = spec_id(algs)
    return struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(ev)) + ev


def record(mr: int, etype: int, data: bytes, algs: tuple[int, ...] = (SHA384,),
           digests: dict[int, bytes] | None = None) -> bytes:
    out = struct.pack("<III", mr, etype, len(algs))
    for a in algs:
        d = (digests or {}).get(a) or hashlib.new({SHA1: "sha1", SHA256: "sha256", SHA384: "sha384"}[a], data).digest()
        out += struct.pack("<H", a) + d
    return out + struct.pack("<I", len(data)) + data


def ccel(records: list[bytes], algs: tuple[int, ...] = (SHA384,), pad: int = 0xFF, area: int = 4096) -> bytes:
    log = header(algs) + b"".join(records)
    return log + bytes([pad]) * max(0, area - len(log))


def extend(regs: list[bytes], idx: int, digest: bytes) -> None:
    regs[idx] = hashlib.sha384(regs[idx] + digest).digest()


def runtime_event(name: str, payload: bytes) -> dict[str, object]:
    return {"imr": 3, "event_type": 0x08000001, "digest": runtime_digest(name, payload).hex(), "event": name,
            "event_payload": payload.hex()}


def load_event(role: str, component: bytes) -> dict[str, object]:
    """A trusted-loader measurement (docs/event-log.md): payload is the text 'sha384:<hex>'."""
    return runtime_event(f"ca-service.load.{role}", f"sha384:{hashlib.sha384(component).hexdigest()}".encode())


def replay_json(events: list[dict[str, object]]) -> list[bytes]:
    regs = [bytes(48)] * 4
    for e in events:
        if e["event_type"] != 3:
            extend(regs, int(e["imr"]), bytes.fromhex(str(e["digest"])))  # type: ignore[call-overload]
    return regs


def dumps(events: list[dict[str, object]]) -> bytes:
    return json.dumps(events).encode()


def ima_binary_entry(path: str, content: bytes, pcr: int = 10, template: str = "ima-ng") -> bytes:
    d_ng = b"sha384:\x00" + hashlib.sha384(content).digest()
    n_ng = path.encode() + b"\x00"
    tdata = struct.pack("<I", len(d_ng)) + d_ng + struct.pack("<I", len(n_ng)) + n_ng
    digest = hashlib.sha384(tdata).digest()
    name = template.encode()
    return struct.pack("<I", pcr) + digest + struct.pack("<I", len(name)) + name + struct.pack("<I", len(tdata)) + tdata
