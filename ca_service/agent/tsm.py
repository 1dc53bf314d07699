"""Evidence from Linux configfs-tsm (``/sys/kernel/config/tsm/report``): TDX quotes, SNP reports,
and the TDX CCEL event log (``/sys/firmware/acpi/tables/data/CCEL``).

Linux ``Documentation/ABI/testing/configfs-tsm``: ``mkdir report/$name`` makes a report request;
write up to 64 bytes to ``inblob``; ``provider`` names the TSM (``tdx_guest``, ``sev_guest``);
``outblob`` is the signed report (TDX: a quote from the host's quoting service; SNP: the
attestation report); ``auxblob`` (SNP, when the host supplies it) holds the certificate table;
``privlevel`` (SNP) the VMPL to request at. Each write bumps ``generation``: a read of ``outblob``
between two equal reads of ``generation`` belongs to *our* ``inblob``, else another process wrote
to the entry and the result is refused. ``rmdir`` releases the request.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

TSM_ROOT = Path("/sys/kernel/config/tsm/report")
CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
PROVIDER_KIND = {"tdx_guest": "tdx-quote", "sev_guest": "snp-report"}
# SNP extended report certificate table (GHCB spec 4.1.8.1): GUIDs of the entries, in RFC 4122 byte
# order as AMD's host tools (libuuid uuid_parse) write them.
SNP_CERT_GUIDS = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
}


class TsmError(Exception):
    """configfs-tsm did not give a report we can trust to be ours (or the TEE is not supported)."""


@dataclass(frozen=True)
class TsmReport:
    kind: str
    provider: str
    outblob: bytes
    auxblob: bytes = b""
    generation: int = 0
    certificates: dict[str, bytes] = field(default_factory=dict)


def tsm_available(root: Path = TSM_ROOT) -> bool:
    return root.is_dir()


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except ValueError as exc:
        raise TsmError(f"{path.name} is not a number") from exc


def snp_certificates(auxblob: bytes) -> dict[str, bytes]:
    """The SNP certificate table in ``auxblob``: entries of {GUID[16], offset u32, length u32} ended by
    an all-zero entry, offsets from the table start; returns {vcek|vlek|ask|ark: DER}. Unknown GUIDs
    are skipped; a table that points outside itself is refused."""
    import struct
    import uuid

    out: dict[str, bytes] = {}
    off = 0
    while off + 24 <= len(auxblob):
        guid = uuid.UUID(bytes=auxblob[off:off + 16])
        start, length = struct.unpack_from("<II", auxblob, off + 16)
        if guid.int == 0 and start == 0 and length == 0:
            return out
        if start + length > len(auxblob):
            raise TsmError("the SNP certificate table points outside auxblob")
        name = SNP_CERT_GUIDS.get(str(guid))
        if name is not None:
            out[name] = auxblob[start:start + length]
        off += 24
    return out


def tsm_request(report_data: bytes, root: Path = TSM_ROOT, *, privlevel: int | None = None) -> TsmReport:
    """Ask the TEE for evidence carrying ``report_data`` (exactly 64 bytes).

    Raises:
        ValueError: report data is not 64 bytes. TsmError: unknown provider, or the entry changed
            under us (``generation`` moved while reading).
    """
    if len(report_data) != 64:
        raise ValueError("configfs-tsm takes 64 bytes of report data")
    entry = root / f"ca-service-{secrets.token_hex(8)}"
    os.mkdir(entry)
    try:
        provider = (entry / "provider").read_text().strip()
        kind = PROVIDER_KIND.get(provider)
        if kind is None:
            raise TsmError(f"unsupported configfs-tsm provider {provider!r}")
        if privlevel is not None and kind == "snp-report":
            (entry / "privlevel").write_text(f"{privlevel}\n")
        (entry / "inblob").write_bytes(report_data)
        gen_path = entry / "generation"
        before = _read_int(gen_path) if gen_path.exists() else None
        blob = (entry / "outblob").read_bytes()
        aux_path = entry / "auxblob"
        aux = aux_path.read_bytes() if kind == "snp-report" and aux_path.exists() else b""
        after = _read_int(gen_path) if gen_path.exists() else None
        if before != after:
            raise TsmError("the configfs-tsm entry was written by someone else while reading the report")
    finally:
        os.rmdir(entry)
    if not blob:
        raise TsmError(f"{provider} returned an empty report")
    certs = snp_certificates(aux) if aux else {}
    return TsmReport(kind, provider, blob, aux, after or 0, certs)


def tsm_report(report_data: bytes, root: Path = TSM_ROOT) -> tuple[str, bytes]:
    """Ask the TEE for evidence carrying ``report_data``; returns (evidence type, bytes)."""
    rep = tsm_request(report_data, root)
    return rep.kind, rep.outblob


def read_ccel(path: Path = CCEL_PATH) -> bytes | None:
    """The TDX firmware event log (the CCEL ACPI table's log area, padding included), or None when the
    kernel does not expose one (not a TD, or an old kernel)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data or None
