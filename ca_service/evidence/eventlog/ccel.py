"""CCEL: the TDX firmware event log in the TCG PC Client crypto-agile format.

Linux exposes the ACPI CCEL table's log area at ``/sys/firmware/acpi/tables/data/CCEL``: the whole
area (LAML bytes), so the log is followed by padding, all 0xFF (erased, TDVF) or all 0x00.

Layout (TCG PC Client Platform Firmware Profile Specification, little-endian):

- 10.2.1 ``TCG_PCClientPCREvent``: the first record, SHA-1 format: PCRIndex u32, EventType u32
  (EV_NO_ACTION), Digest[20] (zero), EventSize u32, Event = 10.4.5.1 ``TCG_EfiSpecIDEventStruct``
  (signature "Spec ID Event03\\0", platformClass u32, version minor/major/errata u8, uintnSize u8,
  numberOfAlgorithms u32, {algorithmId u16, digestSize u16}[n], vendorInfoSize u8, vendorInfo);
- 10.2.2 ``TCG_PCR_EVENT2``: PCRIndex u32, EventType u32, TPML_DIGEST_VALUES (count u32, then
  {hashAlg u16, digest[size from the Spec ID list]}[count]), EventSize u32, Event[EventSize].

For TDX the "PCRIndex" is the CC measurement register index (UEFI 2.10 section 38.4.1,
EFI_CC_MEASUREMENT_PROTOCOL): 0 = MRTD, 1..4 = RTMR0..3. Records are never extended into MRTD.
"""

from __future__ import annotations

import hashlib
import struct

from ca_service.errors import EventLogInconsistent, EventLogMalformed, EventLogUnsupported
from ca_service.evidence.eventlog.model import EV_NO_ACTION, SHA384_LEN, Event, EventLog

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
MAX_RECORDS = 10_000  # real firmware logs hold tens to hundreds; bounds the work a hostile log can cause
_KNOWN_SIZES = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32, TPM_ALG_SHA384: 48, TPM_ALG_SHA512: 64}


def _is_padding(data: bytes, off: int) -> bool:
    """Whether everything from ``off`` is one padding byte (0xFF or 0x00). Cheap for a record: its
    CC MR index and type never start with eight equal padding bytes (index 0 with type 0 is refused),
    so the full scan runs at most once per log, never once per record."""
    first = data[off]
    head = data[off:off + 8]
    if first not in (0x00, 0xFF) or head.count(first) != len(head):
        return False
    return data.count(bytes([first]), off) == len(data) - off


def _spec_id(event: bytes) -> dict[int, int]:
    """10.4.5.1 Spec ID Event03 -> {algorithm id: digest size}."""
    if not event.startswith(SPEC_ID_SIGNATURE):
        raise EventLogMalformed("the first record is not a Spec ID Event03 header (not a crypto-agile log)",
                                field="record[0]")
    fixed = len(SPEC_ID_SIGNATURE) + 4 + 4 + 4
    if len(event) < fixed:
        raise EventLogMalformed("Spec ID Event03 header is truncated", field="record[0]")
    (n_algs,) = struct.unpack_from("<I", event, fixed - 4)
    if n_algs == 0 or n_algs > 8 or len(event) < fixed + 4 * n_algs + 1:
        raise EventLogMalformed("Spec ID Event03 algorithm list is truncated or invalid", field="record[0]")
    algs: dict[int, int] = {}
    for i in range(n_algs):
        alg, size = struct.unpack_from("<HH", event, fixed + 4 * i)
        if alg in algs or size == 0 or size > 64 or _KNOWN_SIZES.get(alg, size) != size:
            raise EventLogInconsistent(f"Spec ID Event03 lists algorithm 0x{alg:04x} twice or with a wrong size",
                                       field="record[0]")
        algs[alg] = size
    vendor_len = event[fixed + 4 * n_algs]
    if len(event) != fixed + 4 * n_algs + 1 + vendor_len:
        raise EventLogMalformed("Spec ID Event03 size does not match its vendor info", field="record[0]")
    if TPM_ALG_SHA384 not in algs:
        raise EventLogUnsupported("the event log has no SHA-384 bank (RTMRs are SHA-384)", field="record[0]")
    return algs


def _take(data: bytes, off: int, n: int, index: int) -> bytes:
    if n < 0 or off + n > len(data):
        raise EventLogMalformed(f"event log record {index} is truncated", field=f"record[{index}]", offset=off)
    return data[off:off + n]


def parse_ccel(data: bytes) -> EventLog:
    """Parse a CCEL log area (the log and its trailing padding).

    Raises:
        EventLogMalformed: ``evidence.event_log_malformed``: truncated record, no Spec ID header,
            register index out of range, non-padding bytes after the last record.
        EventLogInconsistent: ``evidence.event_log_inconsistent``: a record's digest list disagrees
            with the Spec ID header.
        EventLogUnsupported: ``evidence.event_log_unsupported``: no SHA-384 bank.
    """
    data = bytes(data)
    # (1) 10.2.1: the SHA-1-format first record carrying the Spec ID Event03.
    head = _take(data, 0, 32, 0)
    mr_index, etype = struct.unpack_from("<II", head, 0)
    (size,) = struct.unpack_from("<I", head, 28)
    if etype != EV_NO_ACTION:
        raise EventLogMalformed("the first record is not EV_NO_ACTION (not a crypto-agile log)", field="record[0]")
    spec = _take(data, 32, size, 0)
    algs = _spec_id(spec)
    events = [Event(index=0, register=None, type_id=etype, digest=b"", data=spec)]
    off = 32 + size
    # (2) 10.2.2: TCG_PCR_EVENT2 records until the padding.
    while off < len(data) and not _is_padding(data, off):
        index = len(events)
        if index > MAX_RECORDS:
            raise EventLogMalformed(f"event log has more than {MAX_RECORDS} records", field="event_log")
        mr_index, etype, count = struct.unpack_from("<III", _take(data, off, 12, index))
        off += 12
        if count > 8:  # no such TPML_DIGEST_VALUES: these bytes are not a record (nor uniform padding)
            raise EventLogMalformed(f"record {index} is not a TCG_PCR_EVENT2 (the bytes after the log are neither "
                                    "records nor uniform 0xFF/0x00 padding)", field=f"record[{index}]", offset=off - 12)
        if count != len(algs):
            raise EventLogInconsistent(f"record {index} carries {count} digests, the header lists {len(algs)}",
                                       field=f"record[{index}]")
        digests: dict[int, bytes] = {}
        for _ in range(count):
            (alg,) = struct.unpack("<H", _take(data, off, 2, index))
            if alg not in algs or alg in digests:
                raise EventLogInconsistent(f"record {index} has a digest for algorithm 0x{alg:04x} "
                                           "that the header does not list (or twice)", field=f"record[{index}]")
            digests[alg] = _take(data, off + 2, algs[alg], index)
            off += 2 + algs[alg]
        (size,) = struct.unpack("<I", _take(data, off, 4, index))
        event = _take(data, off + 4, size, index)
        off += 4 + size
        if etype == EV_NO_ACTION:  # PFP 10.4.5 / 9.4.5.3: informational, never extended
            events.append(Event(index=index, register=None, type_id=etype, digest=b"", data=event))
            continue
        if not 1 <= mr_index <= 4:
            raise EventLogMalformed(f"record {index} names CC measurement register {mr_index} (RTMRs are 1..4)",
                                    field=f"record[{index}]")
        digest = digests[TPM_ALG_SHA384]
        if len(digest) != SHA384_LEN:  # pragma: no cover - sizes are checked in _spec_id
            raise EventLogInconsistent("SHA-384 digest of the wrong size", field=f"record[{index}]")
        events.append(Event(index=index, register=mr_index - 1, type_id=etype, digest=digest, data=event))
    return EventLog(format="ccel", events=tuple(events), sha256=hashlib.sha256(data).hexdigest())
