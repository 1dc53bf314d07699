"""Intel TCB Info (v3) and QE Identity (v2) models and TCB level matching.

References: Intel PCS API "TCB Info V3" and "Enclave Identity V2" JSON schemas; Intel DCAP Quote
Verification Library (QVL) "TCB level selection": levels are ordered by SGX components, then PCE SVN,
then (TDX) TDX components, highest first, and the first level the platform is >= on every component
is the match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ca_service.errors import CollateralInvalid

# QVL severity order used to merge the platform, QE and TDX module statuses (the worse one wins).
STATUS_SEVERITY: Mapping[str, int] = {
    "UpToDate": 0,
    "SWHardeningNeeded": 1,
    "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3,
    "OutOfDate": 4,
    "OutOfDateConfigurationNeeded": 5,
    "Revoked": 6,
}


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: str = ""

    def merge(self, other: Status) -> Status:
        """QVL status merge: keep the more severe status, union the advisories (order kept)."""
        worse = other if STATUS_SEVERITY[other.status] > STATUS_SEVERITY[self.status] else self
        ids = list(self.advisory_ids)
        ids.extend(a for a in other.advisory_ids if a not in ids)
        return Status(worse.status, tuple(ids), self.tcb_date or other.tcb_date)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx: tuple[int, ...]
    pce_svn: int
    tdx: tuple[int, ...]
    status: Status


@dataclass(frozen=True, slots=True)
class SvnLevel:
    isv_svn: int
    status: Status


@dataclass(frozen=True, slots=True)
class ModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[SvnLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]  # canonical QVL order
    tdx_module: ModuleIdentity | None
    tdx_module_identities: tuple[ModuleIdentity, ...]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    levels: tuple[SvnLevel, ...]


def _get(doc: Mapping[str, Any], key: str, typ: type) -> Any:
    val = doc.get(key)
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise CollateralInvalid(f"collateral field {key!r} is missing or has the wrong type", field=key)
    return val


def _hex(doc: Mapping[str, Any], key: str, length: int) -> bytes:
    try:
        out = bytes.fromhex(_get(doc, key, str))
    except ValueError as exc:
        raise CollateralInvalid(f"collateral field {key!r} is not hex", field=key) from exc
    if len(out) != length:
        raise CollateralInvalid(f"collateral field {key!r} has the wrong length", field=key)
    return out


def parse_date(value: str, key: str = "date") -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CollateralInvalid(f"collateral date {key!r} is not RFC 3339", field=key) from exc
    if dt.tzinfo is None:
        raise CollateralInvalid(f"collateral date {key!r} has no time zone", field=key)
    return dt


def _status(doc: Mapping[str, Any]) -> Status:
    status = _get(doc, "tcbStatus", str)
    if status not in STATUS_SEVERITY:
        raise CollateralInvalid(f"unknown TCB status {status!r}", field="tcbStatus")
    ids = doc.get("advisoryIDs", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CollateralInvalid("advisoryIDs is not a list of strings", field="advisoryIDs")
    date = doc.get("tcbDate", "")
    return Status(status, tuple(ids), date if isinstance(date, str) else "")


def _svn(x: Any, key: str, bits: int) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < (1 << bits):
        raise CollateralInvalid(f"{key} is not a valid SVN", field=key)
    return x


def _components(tcb: Mapping[str, Any], key: str, required: bool) -> tuple[int, ...]:
    comps = tcb.get(key)
    if comps is None and not required:
        return ()
    if not isinstance(comps, list) or len(comps) != 16:
        raise CollateralInvalid(f"{key} must list 16 components", field=key)
    return tuple(_svn(c.get("svn") if isinstance(c, dict) else None, key, 8) for c in comps)


def _svn_levels(doc: Mapping[str, Any]) -> tuple[SvnLevel, ...]:
    out = []
    for lvl in _get(doc, "tcbLevels", list):
        if not isinstance(lvl, dict) or not isinstance(lvl.get("tcb"), dict):
            raise CollateralInvalid("malformed tcbLevels entry", field="tcbLevels")
        out.append(SvnLevel(_svn(lvl["tcb"].get("isvsvn"), "isvsvn", 16), _status(lvl)))
    return tuple(out)


def _module(doc: Mapping[str, Any], with_levels: bool) -> ModuleIdentity:
    return ModuleIdentity(
        id=str(doc.get("id", "")),
        mrsigner=_hex(doc, "mrsigner", 48),
        attributes=_hex(doc, "attributes", 8),
        attributes_mask=_hex(doc, "attributesMask", 8),
        levels=_svn_levels(doc) if with_levels else (),
    )


def parse_tcb_info(doc: Any) -> TcbInfo:
    """Build a TcbInfo from the decoded ``tcbInfo`` JSON (already signature-checked).

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): a field is missing or malformed.
    """
    if not isinstance(doc, dict):
        raise CollateralInvalid("tcbInfo is not a JSON object")
    tcb_id = _get(doc, "id", str)
    version = _get(doc, "version", int)
    is_tdx = tcb_id == "TDX"
    levels = []
    for lvl in _get(doc, "tcbLevels", list):
        tcb = lvl.get("tcb") if isinstance(lvl, dict) else None
        if not isinstance(tcb, dict):
            raise CollateralInvalid("malformed tcbLevels entry", field="tcbLevels")
        levels.append(
            TcbLevel(
                sgx=_components(tcb, "sgxtcbcomponents", True),
                pce_svn=_svn(tcb.get("pcesvn"), "pcesvn", 16),
                tdx=_components(tcb, "tdxtcbcomponents", is_tdx),
                status=_status(lvl),
            )
        )
    # QVL canonical order (stable sort): SGX components, PCE SVN, then TDX components, descending.
    levels.sort(key=lambda lv: (lv.sgx, lv.pce_svn, lv.tdx if is_tdx else ()), reverse=True)
    module = doc.get("tdxModule")
    identities = doc.get("tdxModuleIdentities", [])
    if not isinstance(identities, list) or not all(isinstance(i, dict) for i in identities):
        raise CollateralInvalid("tdxModuleIdentities is not a list", field="tdxModuleIdentities")
    return TcbInfo(
        id=tcb_id,
        version=version,
        issue_date=parse_date(_get(doc, "issueDate", str), "issueDate"),
        next_update=parse_date(_get(doc, "nextUpdate", str), "nextUpdate"),
        fmspc=_hex(doc, "fmspc", 6),
        pce_id=_hex(doc, "pceId", 2),
        tcb_evaluation_data_number=_get(doc, "tcbEvaluationDataNumber", int),
        levels=tuple(levels),
        tdx_module=_module(module, False) if isinstance(module, dict) else None,
        tdx_module_identities=tuple(_module(i, True) for i in identities),
    )


def parse_qe_identity(doc: Any) -> QeIdentity:
    """Build a QeIdentity from the decoded ``enclaveIdentity`` JSON (already signature-checked).

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): a field is missing or malformed.
    """
    if not isinstance(doc, dict):
        raise CollateralInvalid("enclaveIdentity is not a JSON object")
    return QeIdentity(
        id=_get(doc, "id", str),
        version=_get(doc, "version", int),
        issue_date=parse_date(_get(doc, "issueDate", str), "issueDate"),
        next_update=parse_date(_get(doc, "nextUpdate", str), "nextUpdate"),
        tcb_evaluation_data_number=_get(doc, "tcbEvaluationDataNumber", int),
        miscselect=int.from_bytes(_hex(doc, "miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(_hex(doc, "miscselectMask", 4), "little"),
        attributes=_hex(doc, "attributes", 16),
        attributes_mask=_hex(doc, "attributesMask", 16),
        mrsigner=_hex(doc, "mrsigner", 32),
        isv_prod_id=_svn(doc.get("isvprodid"), "isvprodid", 16),
        levels=_svn_levels(doc),
    )


def match_platform_level(
    levels: Sequence[TcbLevel],
    cpu_svn: Sequence[int],
    pce_svn: int,
    tee_tcb_svn: bytes | None,
    module_checked: bool = False,
) -> TcbLevel | None:
    """QVL "TCB level matching": the first level the platform meets on every component.

    With ``module_checked`` (TDX module major version > 0 and ``tdxModuleIdentities`` present), QVL
    leaves TEE_TCB_SVN bytes 0-1 (module ISVSVN and version) to the module identity check and
    compares the TDX components from byte 2.
    """
    start = 2 if module_checked else 0
    for lvl in levels:
        if pce_svn < lvl.pce_svn:
            continue
        if any(a < b for a, b in zip(cpu_svn, lvl.sgx, strict=True)):
            continue
        if tee_tcb_svn is not None and any(
            a < b for a, b in zip(tee_tcb_svn[start:], lvl.tdx[start:], strict=True)
        ):
            continue
        return lvl
    return None


def match_svn_level(levels: Sequence[SvnLevel], isv_svn: int) -> SvnLevel | None:
    """QE Identity / TDX module identity: the first level whose ISVSVN the report meets."""
    for lvl in levels:
        if isv_svn >= lvl.isv_svn:
            return lvl
    return None
