"""Linux IMA runtime measurement lists (SHA-384 bank), replayed into RTMR2 beside the CCEL.

Linux ``security/integrity/ima/ima_fs.c`` serves the list per bank as
``ascii_runtime_measurements_sha384`` (lines ``PCR template-hash template-name fields...``) and
``binary_runtime_measurements_sha384``, each entry: PCR u32, template digest[48], template-name
length u32, name, template-data length u32, template data (for templates other than the legacy
``ima``, the data is each field as u32 length + bytes, and the template digest is the bank's hash
over exactly that: ``ima_calc_field_array_hash``). A violation is logged with a zero digest and
extends the register with all-ones. IMA's PCR (10 by default) maps to RTMR2 by the UEFI CC
mapping (PCR 8..15 -> CC MR 3 = RTMR2; UEFI 2.10 section 38.4.1).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogUnsupported
from ca_service.evidence.eventlog.model import SHA384_LEN, ImaEntry, ImaLog

IMA_RTMR = 2
MAX_ENTRIES = 200_000
_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")


def _check_pcr(pcr: int, index: int) -> None:
    if not 8 <= pcr <= 15:
        raise EventLogUnsupported(f"IMA entry {index} extends PCR {pcr}; only PCR 8..15 (RTMR2) are replayed",
                                  field=f"ima[{index}].pcr")


def parse_ima_ascii(text: bytes) -> ImaLog:
    """Parse ``ascii_runtime_measurements_sha384``.

    Raises:
        EventLogMalformed: ``evidence.event_log_malformed``; EventLogUnsupported: a SHA-1 list or PCR
            outside 8..15 (``evidence.event_log_unsupported``).
    """
    try:
        lines = bytes(text).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EventLogMalformed("IMA log is neither text nor the binary form", field="ima") from exc
    entries: list[ImaEntry] = []
    for index, line in enumerate(ln for ln in lines if ln.strip()):
        parts = line.split(" ")
        if len(parts) < 3 or not parts[0].isdigit() or not _NAME.match(parts[2]):
            raise EventLogMalformed(f"IMA line {index} is not 'PCR template-hash template-name ...'",
                                    field=f"ima[{index}]")
        pcr = int(parts[0])
        try:
            digest = bytes.fromhex(parts[1])
        except ValueError as exc:
            raise EventLogMalformed(f"IMA line {index}: template hash is not hex", field=f"ima[{index}]") from exc
        if len(digest) == 20:
            raise EventLogUnsupported("IMA log is the SHA-1 list; send ascii_runtime_measurements_sha384",
                                      field="ima")
        if len(digest) != SHA384_LEN:
            raise EventLogMalformed(f"IMA line {index}: template hash is not SHA-384", field=f"ima[{index}]")
        _check_pcr(pcr, index)
        entries.append(ImaEntry(index, pcr, digest, parts[2], tuple(parts[3:])))
        if len(entries) > MAX_ENTRIES:
            raise EventLogMalformed("IMA log has too many entries", field="ima")
    return ImaLog("ima-ascii", tuple(entries), hashlib.sha256(bytes(text)).hexdigest())


def _fields(data: bytes, index: int) -> tuple[bytes, ...]:
    out: list[bytes] = []
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise EventLogMalformed(f"IMA entry {index}: template field is truncated", field=f"ima[{index}]")
        (n,) = struct.unpack_from("<I", data, off)
        if off + 4 + n > len(data):
            raise EventLogMalformed(f"IMA entry {index}: template field is truncated", field=f"ima[{index}]")
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return tuple(out)


def _field_text(template: str, fields: tuple[bytes, ...]) -> tuple[str, ...]:
    """ima-ng / ima-sig / ima-buf: d-ng is ``"<alg>:\\0" || digest``, n-ng a NUL-terminated name."""
    out: list[str] = []
    for i, f in enumerate(fields):
        if i == 0 and template.startswith("ima-") and b":\x00" in f[:16]:
            alg, _, digest = f.partition(b":\x00")
            out.append(f"{alg.decode('ascii', 'replace')}:{digest.hex()}")
        elif i == 1 and template.startswith("ima-"):
            out.append(f.rstrip(b"\x00").decode("utf-8", "replace"))
        else:
            out.append(f.hex())
    return tuple(out)


def parse_ima_binary(data: bytes) -> ImaLog:
    """Parse ``binary_runtime_measurements_sha384``; each template digest is recomputed.

    Raises:
        EventLogMalformed, EventLogInconsistent (a template digest that is not the hash of its data),
        EventLogUnsupported (the legacy ``ima`` template, PCR outside 8..15).
    """
    data = bytes(data)
    entries: list[ImaEntry] = []
    off = 0
    while off < len(data):
        index = len(entries)
        if off + 4 + SHA384_LEN + 4 > len(data):
            raise EventLogMalformed(f"IMA entry {index} is truncated", field=f"ima[{index}]")
        (pcr,) = struct.unpack_from("<I", data, off)
        digest = data[off + 4:off + 4 + SHA384_LEN]
        off += 4 + SHA384_LEN
        (name_len,) = struct.unpack_from("<I", data, off)
        if not 1 <= name_len <= 32 or off + 4 + name_len + 4 > len(data):
            raise EventLogMalformed(f"IMA entry {index}: template name is truncated or too long", field=f"ima[{index}]")
        try:
            template = data[off + 4:off + 4 + name_len].decode("ascii")
        except UnicodeDecodeError as exc:
            raise EventLogMalformed(f"IMA entry {index}: template name is not ASCII", field=f"ima[{index}]") from exc
        if not _NAME.match(template):
            raise EventLogMalformed(f"IMA entry {index}: bad template name", field=f"ima[{index}]")
        if template == "ima":
            raise EventLogUnsupported("the legacy 'ima' template (SHA-1 only) cannot be replayed into an RTMR",
                                      field=f"ima[{index}]")
        off += 4 + name_len
        (data_len,) = struct.unpack_from("<I", data, off)
        if off + 4 + data_len > len(data):
            raise EventLogMalformed(f"IMA entry {index}: template data is truncated", field=f"ima[{index}]")
        tdata = data[off + 4:off + 4 + data_len]
        off += 4 + data_len
        _check_pcr(pcr, index)
        entry = ImaEntry(index, pcr, digest, template, _field_text(template, _fields(tdata, index)))
        if not entry.violation and not hmac.compare_digest(hashlib.sha384(tdata).digest(), digest):
            raise EventLogInconsistent(f"IMA entry {index}: template digest is not SHA-384 of its data",
                                       field=f"ima[{index}]")
        entries.append(entry)
        if len(entries) > MAX_ENTRIES:
            raise EventLogMalformed("IMA log has too many entries", field="ima")
    return ImaLog("ima-binary", tuple(entries), hashlib.sha256(data).hexdigest())


def parse_ima(data: bytes) -> ImaLog:
    """The ASCII form when the bytes start with a PCR number and a space, else the binary form."""
    if re.match(rb"^\s*[0-9]{1,2} [0-9a-fA-F]", bytes(data[:8])):
        return parse_ima_ascii(data)
    return parse_ima_binary(data)


def extend_value(entry: ImaEntry) -> bytes:
    return b"\xff" * SHA384_LEN if entry.violation else entry.template_hash
