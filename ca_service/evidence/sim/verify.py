"""Verify a sim report: chain to the pinned sim root, signature, vendor-like baseline."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service.errors import (
    CertificateExpired,
    ChainInvalid,
    DebugEnabled,
    EvidenceMalformed,
    RootUntrusted,
    SeptVeNotDisabled,
    SignatureInvalid,
)
from ca_service.evidence.base import Check, VerifiedEvidence, sha256_hex
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.sim.parse import TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE, parse_sim_report
from ca_service.evidence.trust import TrustRoots, is_pinned


def _load_chain(ders: tuple[bytes, ...]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as exc:
        raise EvidenceMalformed("a certificate in the sim report cannot be parsed") from exc


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateExpired(f"certificate {cert.subject.rfc4514_string()} is not valid at {at.isoformat()}")


def verify_sim(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify an INSECURE sim report as of ``at``.

    Raises:
        EvidenceMalformed, RootUntrusted (``evidence.root_untrusted``), ChainInvalid,
        CertificateExpired, SignatureInvalid, DebugEnabled, SeptVeNotDisabled.
    """
    report = parse_sim_report(evidence)
    chain = _load_chain(report.certificates_der)
    checks: list[Check] = [Check("parse", True, f"sim report v{report.version}")]

    # (1) The chain ends at a pinned sim root; a root is never trusted for being present.
    root = chain[-1]
    if not roots.sim or not is_pinned(root, roots.sim):
        raise RootUntrusted("the sim root is not pinned by this deployment")
    checks.append(Check("root_pinned", True, "sim root matches the deployment's pin"))

    # (2) Each certificate is signed by the next one and valid at `at`.
    for child, parent in zip(chain, chain[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid("sim certificate chain does not verify") from exc
    for cert in chain:
        _check_validity(cert, at)
    checks.append(Check("chain", True, f"{len(chain)} certificates to the sim root"))

    # (3) The report signature by the attestation key (the chain's leaf).
    ak = chain[0].public_key()
    if not isinstance(ak, ec.EllipticCurvePublicKey) or not isinstance(ak.curve, ec.SECP256R1):
        raise ChainInvalid("sim attestation key must be ECDSA P-256")
    r = int.from_bytes(report.signature[:32], "big")
    s = int.from_bytes(report.signature[32:], "big")
    try:
        ak.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureInvalid("sim report signature does not verify") from exc
    checks.append(Check("report_signature", True, "ECDSA P-256 by the attestation key"))

    # (4) Baseline, as for real TDX: no debug TD, SEPT_VE_DISABLE set.
    attrs = report.td_attributes
    if attrs & TD_ATTR_DEBUG:
        raise DebugEnabled("sim TD has the DEBUG attribute")
    if not attrs & TD_ATTR_SEPT_VE_DISABLE:
        raise SeptVeNotDisabled("sim TD does not set SEPT_VE_DISABLE")
    checks.append(Check("td_attributes", True, "not debug; SEPT_VE_DISABLE set"))

    claims: dict[str, str | bool] = {name: value.hex() for name, value in report.fields.items()}
    claims["debug"] = False
    claims["tee"] = "sim"
    return VerifiedEvidence(
        kind="sim",
        report_data=report.fields["report_data"],
        claims=claims,
        checks=tuple(checks),
        evidence_sha256=sha256_hex(evidence),
        tcb_status="UpToDate",
        advisory_ids=(),
        collateral_sha256={"sim_root": sha256_hex(report.certificates_der[-1])},
        insecure=True,
    )
