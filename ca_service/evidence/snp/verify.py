"""Verify an AMD SEV-SNP attestation report (raw, or wrapped in an Azure HCL report).

Steps, each raising its own :class:`~ca_service.errors.EvidenceError` leaf:

1. Unwrap: evidence starting with ``HCLA`` is an Azure HCL report (``azure.py``); anything else
   must be exactly one ATTESTATION_REPORT (ABI spec Table 23). Parse (``parse.py``).
2. Signing key: SIGNING_KEY (Table 23 offset 0x48 bits 4:2) names the VCEK or the VLEK; the
   matching certificate is picked from the collateral by content.
3. Binding of the certificate to this report: a VCEK's hwID equals CHIP_ID (VCEK spec 57230
   Table 8; 8 bytes on Turin), and the VCEK/VLEK SPL extensions equal REPORTED_TCB (Table 3
   layout of the product line). A VLEK has no hwID and is never matched on chip id.
4. Chain ARK (pinned) -> ASK/ASVK -> VCEK/VLEK, RSASSA-PSS SHA-384, validity at ``at``
   (``chain.py``, cached per chain).
5. Product line: the certificates and, for report version >= 3, CPUID_FAM_ID/CPUID_MOD_ID agree.
6. Revocation by the ARK's CRL: signature, window at ``at``, ASK/ASVK not revoked; a missing,
   expired, unparseable or wrongly signed CRL is reported as such (``revocation.amd_crl_<state>``).
7. Report signature: ECDSA P-384/SHA-384 over bytes 0x000..0x29F, R and S little-endian
   (ABI spec Chapter 10).
8. Vendor baseline: POLICY.DEBUG (section 4.3, bit 19) is clear.
9. Azure: REPORT_DATA binds the HCL runtime data.

``tcb_status`` is always None: AMD publishes no TCB status for SEV-SNP (unlike Intel's TCB Info),
so "up to date" is not something the report and its certificates can prove. The reported,
committed, current and launch TCBs are claims; minimum TCBs belong to the policy (``min_tcb``).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service.clock import require_aware
from ca_service.errors import (
    CollateralInvalid,
    CollateralMissing,
    DebugEnabled,
    EvidenceError,
    EvidenceUnsupported,
    SignatureInvalid,
    SnpChipIdMismatch,
    SnpProductMismatch,
    SnpTcbMismatch,
)
from ca_service.evidence.base import Check, VerifiedEvidence, sha256_hex
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.snp.azure import HclReport, is_hcl_report, parse_hcl_report
from ca_service.evidence.snp.certs import PRODUCT_LINES, VekInfo, parse_vek
from ca_service.evidence.snp.chain import (
    VerifiedChain,
    build_chain,
    check_crls,
    check_validity,
    select_vek_candidates,
)
from ca_service.evidence.snp.parse import AttestationReport, SigningKey, TcbVersion, parse_report
from ca_service.evidence.trust import TrustRoots

KIND = "snp-report"
REVOCATION_CHECK = "revocation.amd_crl"


def _binding_error(report: AttestationReport, cert: x509.Certificate) -> tuple[VekInfo, EvidenceError | None]:
    """Step 3 for one candidate certificate: None if it endorses this chip at this TCB."""
    vek = parse_vek(cert)
    line = PRODUCT_LINES.get(vek.product_line_name)
    if line is None:
        return vek, SnpProductMismatch(f"VCEK/VLEK product {vek.product_name!r} is not a known product line")
    if vek.key_type is SigningKey.VCEK and not report.chip_id_masked:
        hwid = vek.hwid or b""
        if len(hwid) != line.hwid_len or not hmac.compare_digest(hwid, report.chip_id[: line.hwid_len]):
            return vek, SnpChipIdMismatch("VCEK hwID does not equal the report's CHIP_ID")
    reported = TcbVersion.decode(report.reported_tcb_raw, line.tcb_layout)
    if not vek.tcb_matches(reported, line.tcb_layout):
        return vek, SnpTcbMismatch(
            f"{vek.key_type.name} TCB {vek.to_json()['tcb']} != REPORTED_TCB {reported.to_json()}"
        )
    return vek, None


def _pick_vek(report: AttestationReport, key: SigningKey, collateral: Collateral) -> x509.Certificate:
    candidates = select_vek_candidates(collateral.certificates, key)
    if not candidates:
        raise CollateralMissing(f"the report is signed by its {key.name}; no {key.name} certificate given")
    errors: list[EvidenceError] = []
    for cert in candidates:
        try:
            _, err = _binding_error(report, cert)
        except CollateralInvalid as exc:
            err = exc
        if err is None:
            return cert
        errors.append(err)
    raise errors[0]  # the first candidate's reason: deterministic for a given collateral order


def _check_cpuid(report: AttestationReport, chain: VerifiedChain) -> str:
    if report.cpuid is None:
        return f"{chain.line.name} from the certificates (report v{report.version} has no CPUID)"
    c = report.cpuid
    if not chain.line.matches_cpuid(c.family, c.model):
        raise SnpProductMismatch(
            f"report CPUID family {c.family:#x} model {c.model:#x} is not {chain.line.name}"
        )
    return f"{chain.line.name} from the certificates and CPUID family {c.family:#x} model {c.model:#x}"


def _verify_signature(report: AttestationReport, chain: VerifiedChain) -> None:
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        chain.vek_key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"report signature does not verify with the {chain.vek.key_type.name}"
        ) from exc


def _claims(report: AttestationReport, chain: VerifiedChain) -> dict[str, Any]:
    tcb = {name: t.to_json() for name, t in report.tcb(chain.line.tcb_layout).items()}
    cpuid = report.cpuid
    claims: dict[str, Any] = {
        "version": report.version,
        "product": chain.vek.product_name,
        "product_line": chain.line.name,
        "signing_key": chain.vek.key_type.name.lower(),
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "report_data": report.report_data.hex(),
        "guest_svn": report.guest_svn,
        "policy": report.policy.to_json(),
        "debug": report.policy.debug,
        "vmpl": report.vmpl,
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "platform_info": report.platform_info.to_json(),
        "author_key_en": report.author_key_en,
        "mask_chip_key": report.mask_chip_key,
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "chip_id": report.chip_id.hex(),
        "hwid_matches_chip_id": (
            None if chain.vek.key_type is SigningKey.VLEK or report.chip_id_masked else True
        ),
        "reported_tcb": tcb["reported"],
        "committed_tcb": tcb["committed"],
        "current_tcb": tcb["current"],
        "launch_tcb": tcb["launch"],
        "current_version": ".".join(str(x) for x in report.current_version),
        "committed_version": ".".join(str(x) for x in report.committed_version),
        "cpuid": None
        if cpuid is None
        else {"family": cpuid.family, "model": cpuid.model, "stepping": cpuid.stepping},
        "launch_mit_vector": report.launch_mit_vector,
        "current_mit_vector": report.current_mit_vector,
        "vek": chain.vek.to_json(),
    }
    return claims


def verify_genuine(
    evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots
) -> VerifiedEvidence:
    """Steps 1-7 and 9 of verifying an SEV-SNP report (or Azure HCL report), as of ``at``.

    Everything cryptographic, without the vendor baseline: a debuggable guest passes here with a
    failed ``snp.debug`` check. For diagnostics and tests; issuance goes through :func:`verify_snp`.

    ``collateral`` must hold the VCEK or VLEK and the ASK/ASVK and ARK (AMD KDS ``cert_chain``),
    in any order, PEM or DER; an ARK-signed CRL is checked when given. For an Azure HCL report the
    returned ``report_data`` is the guest's 64-byte HCL ``user-data`` (what a nonce binds to there);
    the SNP REPORT_DATA is in ``claims["hw_report_data"]``.

    Raises:
        EvidenceMalformed: truncated/oversized report, bad HCL wrapping (``evidence.malformed``).
        EvidenceUnsupported: report version not 2/3/5, unknown algorithm or signing key.
        CollateralMissing / CollateralInvalid: no usable VCEK/VLEK, ASK/ASVK or ARK.
        SnpChipIdMismatch (``evidence.snp.chip_id_mismatch``): VCEK of another chip.
        SnpTcbMismatch (``evidence.snp.tcb_mismatch``): VCEK/VLEK for another TCB.
        SnpProductMismatch (``evidence.snp.product_mismatch``): ASK/ARK/CPUID of another line.
        RootUntrusted: ARK not pinned. ChainInvalid: a certificate signature or role is wrong.
        CertificateExpired, CollateralExpired (CRL), CertificateRevoked.
        SignatureInvalid (``evidence.signature_invalid``): the report signature does not verify.
        ReportDataMismatch: an HCL report whose REPORT_DATA does not bind its runtime data.
    """
    at = require_aware(at)
    checks: list[Check] = []

    # 1. Unwrap and parse.
    hcl: HclReport | None = None
    report_bytes = evidence
    if is_hcl_report(evidence):
        hcl = parse_hcl_report(evidence)
        report_bytes = hcl.snp_report
        checks.append(Check("azure.hcl_unwrapped", True, f"HCL v{hcl.version}, SNP report at 0x20"))
    report = parse_report(report_bytes)
    checks.append(Check("snp.report_parsed", True, f"ATTESTATION_REPORT version {report.version}"))

    # 2. Which key signed it.
    key = report.signing_key
    if key is not SigningKey.VCEK and key is not SigningKey.VLEK:
        raise EvidenceUnsupported(f"SIGNING_KEY {key!r} is neither VCEK nor VLEK")

    # 3. The certificate for this chip and TCB.
    leaf = _pick_vek(report, key, collateral)
    if key is SigningKey.VLEK:
        checks.append(Check("snp.chip_id", True, "VLEK: not bound to a chip, chip id not matched"))
    elif report.chip_id_masked:
        checks.append(Check("snp.chip_id", True, "CHIP_ID masked by the guest: VCEK bound by signature only"))
    else:
        checks.append(Check("snp.chip_id", True, "VCEK hwID equals CHIP_ID"))
    checks.append(Check("snp.tcb", True, f"{key.name} SPL extensions equal REPORTED_TCB"))

    # 4. Chain to a pinned ARK, valid at `at`.
    chain = build_chain(leaf, collateral.certificates, roots.amd)
    checks.append(Check("snp.ark_pinned", True, f"{chain.line.ark_cn} SHA-256 {chain.fingerprints[2]}"))
    roles = [role.upper() for role, _ in chain.certificates()]
    checks.append(Check("snp.chain", True, f"{roles[2]} -> {roles[1]} -> {roles[0]}, RSASSA-PSS SHA-384"))
    check_validity(chain, at)
    checks.append(Check("snp.validity", True, f"every certificate valid at {at.isoformat()}"))

    # 5. Product line.
    checks.append(Check("snp.product", True, _check_cpuid(report, chain)))

    # 6. Revocation: the state is reported, and ca_service.evidence.verify refuses anything but "good"
    # unless a policy rule accepts it (a revoked ASK/ASVK is refused here, always).
    crl = check_crls(chain, collateral.crls, at, unparsed=len(collateral.unparsed_crls))
    if crl.checked:
        checks.append(Check(REVOCATION_CHECK, True, crl.detail))
    else:
        checks.append(Check.fail(REVOCATION_CHECK, crl.detail, f"revocation.amd_crl_{crl.state}"))

    # 7. The report signature: the one P-384 verification a warm report costs.
    _verify_signature(report, chain)
    checks.append(Check("snp.signature", True, f"ECDSA P-384/SHA-384 by the {key.name} over 0x000..0x29F"))

    # 8. Vendor baseline, recorded here and enforced by verify_snp.
    checks.append(
        Check("snp.debug", not report.policy.debug, f"guest policy DEBUG (bit 19) = {report.policy.debug}")
    )
    checks.append(
        Check("snp.tcb_status", True, "AMD publishes no TCB status for SNP: appraise the TCBs by policy")
    )

    claims = _claims(report, chain)
    claims["crl"] = crl.to_json()
    claims["revoked"] = False if crl.checked else None  # None: not established (never "not revoked")
    report_data = report.report_data
    if hcl is not None:
        # 9. Azure: the runtime data is as genuine as the report only through this hash.
        checks.append(Check("azure.runtime_binding", True, hcl.check_binding(report.report_data)))
        claims["azure"] = hcl.claims()
        claims["hw_report_data"] = report.report_data.hex()
        report_data = hcl.user_data
        claims["report_data"] = report_data.hex()

    digests = {role: fp for (role, _), fp in zip(chain.certificates(), chain.fingerprints, strict=True)}
    if crl.sha256:
        digests["crl"] = crl.sha256
    expires = {f"amd.{role}": cert.not_valid_after_utc for role, cert in chain.certificates()}
    if crl.next_update is not None:
        expires["amd.crl"] = crl.next_update
    return VerifiedEvidence(
        kind=KIND,
        report_data=report_data,
        claims=claims,
        checks=tuple(checks),
        evidence_sha256=sha256_hex(evidence),
        tcb_status=None,
        collateral_sha256=digests,
        expires_at=expires,
        revocation={"amd_crl": crl.state},
    )


def verify_snp(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify an SEV-SNP report (or Azure HCL report) with its AMD collateral, as of ``at``:
    :func:`verify_genuine`, then the vendor baseline (step 8: POLICY.DEBUG clear).

    Raises:
        DebugEnabled (``evidence.debug_enabled``): a genuine report of a debuggable guest.
        EvidenceError: every leaf :func:`verify_genuine` raises.
    """
    result = verify_genuine(evidence, collateral, at, roots)
    if result.claims["debug"]:
        raise DebugEnabled("guest policy DEBUG (bit 19) is set: the host can read and write guest memory")
    return result
