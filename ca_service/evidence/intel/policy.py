"""Identity and attribute checks of the Intel DCAP flow (steps 6, 9 and 10 of ``verify``).

References: Intel DCAP QVL "QE Identity verification" (Enclave Identity V2: MRSIGNER, ISVPRODID,
MISCSELECT/ATTRIBUTES under mask, ISVSVN -> tcbLevels); TCB Info V3 ``tdxModule`` and
``tdxModuleIdentities`` ("TDX_<version>", MRSIGNERSEAM, SEAMATTRIBUTES under mask, ISVSVN levels);
Intel TDX Module ABI "TD ATTRIBUTES" (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE); SGX SDM "SECS.ATTRIBUTES"
(bit 1 DEBUG).
"""

from __future__ import annotations

import hmac

from ca_service.errors import (
    CollateralInvalid,
    CollateralMismatch,
    DebugEnabled,
    EvidenceMalformed,
    IdentityMismatch,
    SeptVeNotDisabled,
    TcbLevelUnmatched,
)
from ca_service.evidence.intel.parse import TEE_TYPE_SGX, EnclaveReport, TdReport
from ca_service.evidence.intel.tcb import QeIdentity, Status, TcbInfo, match_svn_level

_SGX_ATTR_DEBUG = 0x02
_TD_TUD_DEBUG = 0x01
_TD_SEPT_VE_DISABLE = 1 << 28
# TUD bits 7:1 and SEC bits 27:8 and 29 are reserved (TDX Module ABI, TD ATTRIBUTES).
_TD_RESERVED = 0xFE | (0xFFFFF << 8) | (1 << 29)


def _masked_equal(actual: bytes, expected: bytes, mask: bytes) -> bool:
    return all((a & m) == (e & m) for a, e, m in zip(actual, expected, mask, strict=True))


def check_qe_identity(qe: EnclaveReport, identity: QeIdentity, tee: int) -> Status:
    """(6) The QE report against the QE Identity; returns the QE's TCB status.

    Raises:
        CollateralMismatch: the QE Identity is not for this TEE's quoting enclave.
        IdentityMismatch, DebugEnabled, TcbLevelUnmatched (``evidence.*``).
    """
    want_id, versions = ("QE", (2,)) if tee == TEE_TYPE_SGX else ("TD_QE", (2, 3))
    if identity.id != want_id or identity.version not in versions:
        raise CollateralMismatch(
            f"QE Identity {identity.id!r} v{identity.version} is not for this quote type", field="qe_identity"
        )
    if not hmac.compare_digest(qe.mr_signer, identity.mrsigner):
        raise IdentityMismatch("QE MRSIGNER does not match the QE Identity", field="qe.mrsigner")
    if qe.attributes[0] & _SGX_ATTR_DEBUG:
        raise DebugEnabled("the quoting enclave runs in debug mode", field="qe.attributes")
    if qe.isv_prod_id != identity.isv_prod_id:
        raise IdentityMismatch("QE ISVPRODID does not match the QE Identity", field="qe.isv_prod_id")
    if (qe.misc_select & identity.miscselect_mask) != (identity.miscselect & identity.miscselect_mask):
        raise IdentityMismatch("QE MISCSELECT does not match under mask", field="qe.miscselect")
    if not _masked_equal(qe.attributes, identity.attributes, identity.attributes_mask):
        raise IdentityMismatch("QE ATTRIBUTES do not match under mask", field="qe.attributes")
    level = match_svn_level(identity.levels, qe.isv_svn)
    if level is None:
        raise TcbLevelUnmatched("QE ISVSVN is below every QE Identity TCB level", field="qe.isv_svn")
    return level.status


def check_tdx_module(report: TdReport, info: TcbInfo) -> Status | None:
    """(9) TDX module identity (MRSIGNERSEAM, SEAMATTRIBUTES) and, when listed, its TCB status.

    TEE_TCB_SVN byte 0 is the module ISVSVN and byte 1 its major version, which selects the
    ``tdxModuleIdentities`` entry ``TDX_<version>``.

    Raises:
        CollateralInvalid: a TDX TCB Info without ``tdxModule``.
        IdentityMismatch, TcbLevelUnmatched (``evidence.*``).
    """
    base = info.tdx_module
    if base is None:
        raise CollateralInvalid("TDX TCB Info has no tdxModule", field="tdxModule")
    isv_svn, version = report.tee_tcb_svn[0], report.tee_tcb_svn[1]
    identity = base
    if version > 0 and info.tdx_module_identities:
        wanted = f"TDX_{version:02X}"
        found = [i for i in info.tdx_module_identities if i.id.upper() == wanted]
        if not found:
            raise IdentityMismatch(f"no TDX module identity {wanted} in the TCB Info", field="tee_tcb_svn")
        identity = found[0]
    if not hmac.compare_digest(report.mr_signer_seam, identity.mrsigner):
        raise IdentityMismatch("TDX module MRSIGNERSEAM does not match", field="mrsignerseam")
    if not _masked_equal(report.seam_attributes, identity.attributes, identity.attributes_mask) or any(
        a & ~m & 0xFF for a, m in zip(report.seam_attributes, identity.attributes_mask, strict=True)
    ):
        raise IdentityMismatch("TDX module SEAMATTRIBUTES do not match under mask", field="seam_attributes")
    if identity is base:
        return None
    level = match_svn_level(identity.levels, isv_svn)
    if level is None:
        raise TcbLevelUnmatched("TDX module ISVSVN is below every module TCB level", field="tee_tcb_svn")
    return level.status


def check_td_attributes(report: TdReport) -> None:
    """(10) Vendor baseline for a TD: no service TD binding, not debug, SEPT_VE_DISABLE set.

    Raises:
        IdentityMismatch (non-zero MRSERVICETD), DebugEnabled, SeptVeNotDisabled,
        EvidenceMalformed (reserved attribute bits set).
    """
    if report.mr_service_td is not None and any(report.mr_service_td):
        raise IdentityMismatch("MRSERVICETD is not zero (invalid MR service TD)", field="mrservicetd")
    attrs = int.from_bytes(report.td_attributes, "little")
    if attrs & 0xFE:
        raise EvidenceMalformed("reserved TD attribute bits are set", field="td_attributes")
    if attrs & _TD_TUD_DEBUG:
        raise DebugEnabled("the TD runs in debug mode", field="td_attributes")
    if attrs & _TD_RESERVED:
        raise EvidenceMalformed("reserved TD attribute bits are set", field="td_attributes")
    if not attrs & _TD_SEPT_VE_DISABLE:
        raise SeptVeNotDisabled("SEPT_VE_DISABLE is not set in the TD attributes", field="td_attributes")


def check_enclave_attributes(report: EnclaveReport) -> None:
    """(10) Vendor baseline for an SGX enclave: not debug.

    Raises:
        DebugEnabled (``evidence.debug_enabled``).
    """
    if report.attributes[0] & _SGX_ATTR_DEBUG:
        raise DebugEnabled("the enclave runs in debug mode", field="attributes")
