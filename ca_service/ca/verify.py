"""Relying-party checks of an issued certificate (PURE): chain to a pinned root, validity, EAR."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ca_service.ca.profile import ear_from_certificate


@dataclass
class CertCheck:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class CertificateReport:
    checks: list[CertCheck] = field(default_factory=list)
    ear: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def add(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(CertCheck(name, passed, detail))
        return passed

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.passed, "checks": [c.__dict__ for c in self.checks], "ear": self.ear}


def verify_certificate(chain: list[x509.Certificate], root: x509.Certificate, at: datetime,
                       accept_insecure: bool = False) -> CertificateReport:
    """Check leaf -> intermediates -> root (the given root only), validity at ``at``, the EAR."""
    report = CertificateReport()
    if not chain:
        report.add("chain", False, "no certificate")
        return report
    path = [*chain, root] if chain[-1] != root else chain
    ok = True
    for child, parent in zip(path, path[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            ok = False
            report.add("signature", False, f"{child.subject.rfc4514_string()} is not signed by "
                                            f"{parent.subject.rfc4514_string()}")
            break
        try:
            bc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not bc.ca:
                ok = False
                report.add("basic_constraints", False, f"{parent.subject.rfc4514_string()} is not a CA")
        except x509.ExtensionNotFound:
            ok = False
            report.add("basic_constraints", False, "issuer without basicConstraints")
    if ok:
        report.add("chain", True, f"{len(path)} certificates to the pinned root")
    for cert in path:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            report.add("validity", False, f"{cert.subject.rfc4514_string()} is not valid at {at.isoformat()}")
            break
    else:
        report.add("validity", True, f"valid at {at.isoformat()}")
    try:
        ear = ear_from_certificate(chain[0])
        report.ear = ear
    except (x509.ExtensionNotFound, ValueError) as exc:
        report.add("attestation_result", False, f"no readable id-pe-cmw EAR: {type(exc).__name__}")
        return report
    status = ear.get("ear.status")
    allowed = {"affirming", "warning"} if accept_insecure else {"affirming"}
    report.add("attestation_result", status in allowed,
               f"ear.status={status}; policy {ear.get('ear.appraisal-policy-id')}")
    return report


def check_log_proof(report: CertificateReport, leaf_cert: x509.Certificate, bundle_text: str,
                    vkey: str) -> Any:
    """Check a ``tlog-proof@v1`` bundle for ``leaf_cert`` against the log key ``vkey``.

    The bundle's ``extra`` carries the logged leaf; it must be an issuance leaf naming this
    certificate's SHA-256 and serial, and be included under the signed checkpoint. Returns the
    checkpoint (or None when a check failed).
    """
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.errors import CAServiceError
    from ca_service.tlog.bundle import ProofBundle
    from ca_service.tlog.checkpoint import NoteVerifier
    from ca_service.tlog.leaves import decode_leaf

    try:
        bundle = ProofBundle.parse(bundle_text)
        if bundle.extra is None:
            report.add("log_leaf", False, "the proof bundle does not carry the leaf")
            return None
        leaf = decode_leaf(bundle.extra)
        cert_sha = hashlib.sha256(leaf_cert.public_bytes(Encoding.DER)).hexdigest()
        names_cert = (leaf.type == "issuance" and leaf.body.get("certificate_sha256") == cert_sha
                      and leaf.body.get("serial") == format(leaf_cert.serial_number, "x"))
        if not report.add("log_leaf", names_cert, f"issuance leaf {bundle.index} names this certificate"
                          if names_cert else "the logged leaf is not this certificate's"):
            return None
        cp = bundle.verify(bundle.extra, NoteVerifier.from_vkey(vkey))
    except CAServiceError as exc:
        report.add("log_inclusion", False, f"[{exc.code}] {exc.detail}")
        return None
    report.add("log_inclusion", True, f"leaf {bundle.index} included in the signed checkpoint of size {cp.size}")
    return cp
