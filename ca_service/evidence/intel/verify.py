"""Intel TDX (quote v4/v5) and SGX (quote v3) DCAP verification.

The steps follow the Intel DCAP Quote Verification Library flow (sgxEcdsaQuoteVerification /
tdxQuoteVerification), numbered here as in the code below:

  (1) parse the quote (A.3 header and body, A.4 signature data); header policy;
  (2) collateral: TCB Info, QE Identity and CRLs verified to the pinned root (cached), windows at ``at``;
  (3) PCK certificate chain from certification data type 5 to the pinned root (cached), windows, and
      its revocation by the PCK CRL and the Root CA CRL (states reported, see docs/revocation.md);
  (4) QE report signature by the PCK leaf key;
  (5) QE report data == SHA-256(attestation key || QE auth data) || 32 zero bytes;
  (6) QE identity: MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under mask, ISVSVN -> QE TCB status;
  (7) quote signature by the attestation key over header and body;
  (8) FMSPC, PCE-ID and TCB Info type match the PCK certificate and the quote's TEE;
  (9) platform TCB level (SGX components, PCE SVN, TDX components); TDX module identity;
  (10) merged status (Revoked refused), then the vendor baseline on the report attributes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service.errors import (
    CollateralMismatch,
    EvidenceMalformed,
    EvidenceUnsupported,
    SignatureInvalid,
    TcbLevelUnmatched,
    TcbRevoked,
)
from ca_service.evidence.base import Check, VerifiedEvidence
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.intel import policy
from ca_service.evidence.intel.collateral import VerifiedCollateral, find_v3_document, verified_collateral
from ca_service.evidence.intel.parse import (
    INTEL_QE_VENDOR_ID,
    QE_AUTH_DATA_LEN,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    EnclaveReport,
    Quote,
    TdReport,
    parse_quote,
)
from ca_service.evidence.intel.pck import VerifiedChain, verified_pck
from ca_service.evidence.intel.tcb import Status, match_platform_level
from ca_service.evidence.trust import TrustRoots

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256 = ec.SECP256R1()
_ZERO32 = bytes(32)


def verify_tdx(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify an Intel TDX quote (v4 or v5) against Intel collateral as of ``at``.

    Raises:
        EvidenceError: a leaf naming the failed check (``evidence.*`` codes), see the module steps.
    """
    return _verify(evidence, collateral, at, roots, TEE_TYPE_TDX)


def verify_sgx(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify an Intel SGX quote (v3) against Intel collateral as of ``at``.

    Raises:
        EvidenceError: a leaf naming the failed check (``evidence.*`` codes), see the module steps.
    """
    return _verify(evidence, collateral, at, roots, TEE_TYPE_SGX)


def _verify(
    evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots, tee: int
) -> VerifiedEvidence:
    # (1) parse and header policy.
    quote = parse_quote(evidence)
    hdr = quote.header
    if hdr.tee_type != tee:
        raise EvidenceUnsupported("quote TEE type does not match the evidence type", field="tee_type")
    if (tee == TEE_TYPE_SGX) != (hdr.version == 3):
        raise EvidenceUnsupported("SGX quotes must be v3 and TDX quotes v4 or v5", field="version")
    if not hmac.compare_digest(hdr.qe_vendor_id, INTEL_QE_VENDOR_ID):
        raise EvidenceUnsupported("QE vendor ID is not Intel's", field="qe_vendor_id")
    # (2) collateral, verified once per document; its windows at `at`.
    doc, parsed = find_v3_document(collateral)
    coll = verified_collateral(doc, roots.intel, parsed)
    # (3) PCK chain to the pinned root; validity at `at`; revocation against the PCK and root CRLs.
    pck = verified_pck(quote.cert_data, roots.intel)
    pck.chain.check_time(at)
    coll.check_time(at)
    # states are judged by ca_service.evidence.verify (revocation.intel_*_crl_<state> unless the policy
    # accepts them); a listed PCK chain certificate is refused here
    revocation, revocation_checks = coll.revocation(pck.chain, at)
    # (4) QE report signed by the PCK leaf key.
    _ecdsa(pck.public_key, quote.qe_report_signature, quote.qe_report.raw, "QE report")
    # (5) QE report data binds the attestation key and the QE authentication data.
    if len(quote.qe_auth_data) != QE_AUTH_DATA_LEN:
        raise EvidenceMalformed("QE authentication data must be 32 bytes", field="qe_auth_data")
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + _ZERO32
    if not hmac.compare_digest(quote.qe_report.report_data, expected):
        raise SignatureInvalid("QE report data does not bind the attestation key", field="qe_report_data")
    # (6) QE identity and the QE's TCB status.
    qe_status = policy.check_qe_identity(quote.qe_report, coll.qe_identity, tee)
    # (7) quote signature by the attestation key over header and body.
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + quote.attestation_key)
    except ValueError as exc:
        raise SignatureInvalid("attestation key is not a P-256 point", field="attestation_key") from exc
    _ecdsa(att_key, quote.signature, quote.signed_region, "quote")
    # (8) the TCB Info belongs to this platform and TEE.
    info = coll.tcb_info
    if not hmac.compare_digest(info.fmspc, pck.info.fmspc):
        raise CollateralMismatch("TCB Info FMSPC does not match the PCK certificate", field="fmspc")
    if not hmac.compare_digest(info.pce_id, pck.info.pce_id):
        raise CollateralMismatch("TCB Info PCE-ID does not match the PCK certificate", field="pce_id")
    body = quote.body
    if tee == TEE_TYPE_TDX:
        if info.id != "TDX" or info.version < 3:
            raise CollateralMismatch("TDX quote with non-TDX TCB Info", field="tcb_info.id")
    elif info.id != "SGX" or info.version < 2:
        raise CollateralMismatch("SGX quote with non-SGX TCB Info", field="tcb_info.id")
    # (9) platform TCB level, then (TDX) the module identity.
    tee_svn = body.tee_tcb_svn if isinstance(body, TdReport) else None
    module_checked = tee_svn is not None and tee_svn[1] > 0 and bool(info.tdx_module_identities)
    level = match_platform_level(info.levels, pck.info.cpu_svn, pck.info.pce_svn, tee_svn, module_checked)
    if level is None:
        raise TcbLevelUnmatched("no TCB level in the TCB Info matches the platform")
    platform = level.status
    status = platform
    if isinstance(body, TdReport):
        module = policy.check_tdx_module(body, info)
        if module is not None:
            status = status.merge(module)
    # (10) merged status; Revoked is a refusal. Then the vendor baseline.
    status = status.merge(qe_status)
    if status.status == "Revoked":
        raise TcbRevoked("the platform, QE or TDX module TCB is revoked")
    if isinstance(body, TdReport):
        policy.check_td_attributes(body)
    else:
        policy.check_enclave_attributes(body)
    result = _result(quote, body, status, platform, coll.tcb_info.tcb_evaluation_data_number,
                     pck.info.fmspc, {**coll.sha256, "intel.pck_chain": pck.sha256}, qe_status)
    return replace(result, expires_at=_expiries(coll, pck.chain), revocation=revocation,
                   checks=result.checks + tuple(revocation_checks))


def _expiries(coll: VerifiedCollateral, pck_chain: VerifiedChain) -> dict[str, datetime]:
    """nextUpdate of TCB Info, QE Identity and each CRL (named by what its issuer is), and the earliest
    notAfter of the PCK chain and of the collateral signing chains."""
    root = pck_chain.windows[-1].subject
    out = {"intel.tcb_info": coll.tcb_info.next_update, "intel.qe_identity": coll.qe_identity.next_update,
           "intel.pck_chain": min(w.not_after for w in pck_chain.windows)}
    for crl in coll.crls:
        if crl.next_update is not None:
            name = "intel.root_ca_crl" if crl.issuer == root else "intel.pck_crl"
            out[name] = min(crl.next_update, out.get(name, crl.next_update))
    windows = [w.not_after for chain in coll.chains for w in chain.windows]
    if windows:
        out["intel.collateral_chains"] = min(windows)
    return out


def _ecdsa(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes, what: str) -> None:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise SignatureInvalid(f"{what} signature does not verify", field=what) from exc


def _result(
    quote: Quote,
    body: EnclaveReport | TdReport,
    status: Status,
    platform: Status,
    tcb_eval: int,
    fmspc: bytes,
    digests: dict[str, str],
    qe_status: Status,
) -> VerifiedEvidence:
    claims: dict[str, object] = {
        "quote_version": quote.header.version,
        "fmspc": fmspc.hex(),
        "tcb_date": platform.tcb_date,
        "tcb_evaluation_data_number": tcb_eval,
        "qe_tcb_status": qe_status.status,
        "platform_tcb_status": platform.status,
        "report_data": body.report_data.hex(),
    }
    if isinstance(body, TdReport):
        kind = "tdx-quote"
        claims.update(
            tee="tdx",
            td_report="1.5" if body.mr_service_td is not None else "1.0",
            mrtd=body.mr_td.hex(),
            rtmr0=body.rtmr[0].hex(),
            rtmr1=body.rtmr[1].hex(),
            rtmr2=body.rtmr[2].hex(),
            rtmr3=body.rtmr[3].hex(),
            mrconfigid=body.mr_config_id.hex(),
            mrowner=body.mr_owner.hex(),
            mrownerconfig=body.mr_owner_config.hex(),
            mrseam=body.mr_seam.hex(),
            mrsignerseam=body.mr_signer_seam.hex(),
            seam_attributes=body.seam_attributes.hex(),
            td_attributes=body.td_attributes.hex(),
            xfam=body.xfam.hex(),
            tee_tcb_svn=body.tee_tcb_svn.hex(),
            debug=False,
        )
        if body.mr_service_td is not None and body.tee_tcb_svn2 is not None:
            claims.update(mrservicetd=body.mr_service_td.hex(), tee_tcb_svn2=body.tee_tcb_svn2.hex())
    else:
        kind = "sgx-quote"
        claims.update(
            tee="sgx",
            mrenclave=body.mr_enclave.hex(),
            mrsigner=body.mr_signer.hex(),
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            attributes=body.attributes.hex(),
            miscselect=body.misc_select,
            cpu_svn=body.cpu_svn.hex(),
            debug=False,
        )
    checks = tuple(
        Check(name, True)
        for name in (
            "quote.parse", "collateral.signatures", "collateral.validity", "pck.chain",
            "qe_report.signature", "qe_report.binding", "qe.identity", "quote.signature",
            "tcb_info.platform", "tcb.level", "attributes.baseline",
        )
    )
    return VerifiedEvidence(
        kind=kind,
        report_data=body.report_data,
        claims=claims,
        checks=checks,
        evidence_sha256=hashlib.sha256(quote.raw).hexdigest(),
        tcb_status=status.status,
        advisory_ids=status.advisory_ids,
        collateral_sha256=digests,
    )
