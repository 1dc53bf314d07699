"""The relying party's side (DESIGN.md flow 3): verify a certificate alone, then seal data to it.

``verify_certificate`` checks, each as its own step: the chain to a pinned root and validity at a
time, revocation (OCSP at the AIA URL with a nonce, falling back to the CRL at the CDP; or a CRL /
OCSP response the caller supplies), the certificate's profile and EAR status, and every stated
expectation. ``seal`` runs the very same verification first (and, given a ``LogTrust``, the log
and anchor checks), so data can never be sealed to a key that ``verify`` with the same arguments
would refuse; ``unseal`` opens what it wrote. The network sits behind a ``Fetcher``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from cryptography import x509

from ca_service.errors import SealRefused
from ca_service.relying_party.expect import Expectation
from ca_service.relying_party.revocation import Fetcher, check_crl, check_ocsp, check_online

if TYPE_CHECKING:
    from ca_service.relying_party.transparency import LogTrust

__all__ = ["Expectation", "RecipientRefused", "Step", "Verdict", "seal", "seal_verified", "unseal",
           "verify_certificate"]

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


@dataclass
class Step:
    name: str
    state: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.state == PASS


@dataclass
class Verdict:
    """Every step, and one verdict: ``ok`` only when no step failed and at least one passed."""

    steps: list[Step] = field(default_factory=list)
    ear: dict[str, Any] | None = None
    certificate: x509.Certificate | None = None

    @property
    def ok(self) -> bool:
        return any(s.state == PASS for s in self.steps) and not any(s.state == FAIL for s in self.steps)

    # the CertificateReport interface, so the log-proof and anchor checks add their steps here too
    @property
    def passed(self) -> bool:
        return self.ok

    def add(self, name: str, passed: bool, detail: str = "") -> bool:
        self.steps.append(Step(name, PASS if passed else FAIL, detail))
        return passed

    def note(self, name: str, state: str, detail: str) -> None:
        self.steps.append(Step(name, state, detail))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "verdict": "pass" if self.ok else "fail",
                "steps": [{"name": s.name, "result": s.state, "detail": s.detail} for s in self.steps],
                # the earlier shape, kept for scripts that read it: a warning or skip is not "passed"
                "checks": [{"name": s.name, "passed": s.passed, "detail": s.detail} for s in self.steps],
                "ear": self.ear}


def _tier(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value == 0:
        return "none"
    if 2 <= value <= 31:
        return "affirming"
    if 32 <= value <= 95:
        return "warning"
    return "contraindicated" if 96 <= value <= 127 else "none"


def _status_step(verdict: Verdict, ear: dict[str, Any], accept_insecure: bool, accept_warning: bool) -> None:
    status = ear.get("ear.status")
    insecure_cert = ear.get("ca-service.profile") == "insecure-dev"
    if insecure_cert and not accept_insecure:
        verdict.add("profile", False, "issued under the insecure-dev profile (no hardware vouches for it); "
                                      "--accept-insecure accepts such certificates")
    elif insecure_cert:
        verdict.note("profile", WARN, "insecure-dev certificate, accepted by --accept-insecure")
    else:
        verdict.add("profile", True, f"profile {ear.get('ca-service.profile', 'production')}")
    if status == "affirming":
        verdict.add("status", True, "ear.status affirming")
        return
    if status != "warning":
        verdict.add("status", False, f"ear.status {status}")
        return
    short: list[str] = []
    for name, sub in (ear.get("submods") or {}).items():
        if not isinstance(sub, dict):
            continue
        for claim, value in (sub.get("ear.trustworthiness-vector") or {}).items():
            if _tier(value) != "warning":
                continue
            if accept_insecure and sub.get("ca-service.insecure") is True and claim == "hardware":
                continue  # the sim TEE's own shortfall: what --accept-insecure accepts
            short.append(f"{name}.{claim}={value}")
    if not short:
        verdict.add("status", True, "ear.status warning only because the TEE is the insecure sim")
    elif accept_warning:
        verdict.note("status", WARN, "ear.status warning, accepted by --accept-warning; short: " + ", ".join(short))
    else:
        verdict.add("status", False, "ear.status warning (trust vector claims short: " + ", ".join(short)
                    + "); --accept-warning accepts it")


def verify_certificate(chain: Sequence[x509.Certificate], root: x509.Certificate, *, at: datetime,
                       expectations: Sequence[Expectation] = (), revocation: str = "online",
                       crl: bytes | None = None, ocsp_response: bytes | None = None,
                       fetch: Fetcher | None = None, accept_insecure: bool = False,
                       accept_warning: bool = False) -> Verdict:
    """Verify ``chain`` (leaf first) against ``root`` as of ``at``.

    ``revocation``: ``online`` (OCSP, then CRL, through ``fetch``), ``offline`` (the given ``crl``
    and/or ``ocsp_response``), or ``skip`` (a warning, never a pass).
    """
    from ca_service.ca.verify import verify_certificate as check_chain

    verdict = Verdict()
    chain = [c for c in chain if c != root]
    base = check_chain(list(chain), root, at, accept_insecure=True)
    for c in base.checks:
        if c.name != "attestation_result" or base.ear is None:
            verdict.add(c.name, c.passed, c.detail)
    if not chain:
        return verdict
    leaf = chain[0]
    verdict.certificate, verdict.ear = leaf, base.ear
    issuer = chain[1] if len(chain) > 1 else root

    # revocation
    if revocation == "skip":
        verdict.note("revocation", WARN, "not checked (--no-revocation)")
    else:
        results = []
        if revocation == "offline":
            if ocsp_response is not None:
                results.append(check_ocsp(leaf, issuer, ocsp_response, at, source="OCSP response file"))
            if crl is not None:
                results.append(check_crl(leaf, issuer, crl, at, source="CRL file"))
            if not results:
                verdict.add("revocation", False, "offline: give --crl or --ocsp-response, or --no-revocation")
        elif fetch is None:
            verdict.add("revocation", False, "online revocation needs a fetcher")
        else:
            results.append(check_online(leaf, issuer, at, fetch))
        for r in results:
            if r.state == "good":
                verdict.add("revocation", True, f"{r.source}: {r.detail}")
            elif r.state == "revoked":
                verdict.add("revocation", False, f"REVOKED ({r.source}): {r.detail}")
            else:
                verdict.add("revocation", False, f"could not be checked ({r.source}): {r.detail}")

    if base.ear is None:
        return verdict
    _status_step(verdict, base.ear, accept_insecure, accept_warning)
    for e in expectations:
        ok, detail = e.check(base.ear)
        verdict.add(f"expect {e.key}", ok, detail)
    return verdict


class RecipientRefused(SealRefused):
    """``seal.refused``: the recipient's certificate did not pass every check; ``verdict`` says which."""

    def __init__(self, verdict: Verdict) -> None:
        failed = [f"{s.name}: {s.detail}" for s in verdict.steps if s.state == FAIL]
        super().__init__("the recipient certificate did not pass every check; nothing was sealed"
                         + (" (" + "; ".join(failed)[:600] + ")" if failed else ""))
        self.verdict = verdict


def seal_verified(verdict: Verdict, src: BinaryIO, dst: BinaryIO) -> None:
    """Seal ``src`` to the certificate of a verdict that passed; nothing is written otherwise.

    Raises:
        RecipientRefused (``seal.refused``): the verdict did not pass.
        SealRefused (``seal.refused``): its key usage lacks keyAgreement, or its key has no HPKE suite.
    """
    from ca_service.relying_party.seal import seal_stream

    if not verdict.ok or verdict.certificate is None:
        raise RecipientRefused(verdict)
    seal_stream(verdict.certificate, src, dst)


def seal(chain: Sequence[x509.Certificate], root: x509.Certificate, src: BinaryIO, dst: BinaryIO, *,
         at: datetime, expectations: Sequence[Expectation] = (), revocation: str = "online",
         crl: bytes | None = None, ocsp_response: bytes | None = None, fetch: Fetcher | None = None,
         accept_insecure: bool = False, accept_warning: bool = False, log: LogTrust | None = None,
         proof: str | None = None, server: str | None = None) -> Verdict:
    """Verify the recipient ``chain`` exactly as ``verify_certificate`` does (with ``log``, also its
    log inclusion and, when ``log.chain`` is set, the anchor covering it: ``check_transparency``,
    the proof from ``proof`` or fetched from ``server``), then encrypt ``src`` to its key (HPKE,
    ``relying_party.seal``) into ``dst``. Returns the verdict; nothing is written unless it passed.

    Raises:
        RecipientRefused (``seal.refused``): a check failed (``exc.verdict`` holds every step).
        SealRefused (``seal.refused``): the certificate's key cannot be sealed to.
    """
    verdict = verify_certificate(chain, root, at=at, expectations=expectations, revocation=revocation, crl=crl,
                                 ocsp_response=ocsp_response, fetch=fetch, accept_insecure=accept_insecure,
                                 accept_warning=accept_warning)
    if log is not None and verdict.certificate is not None and verdict.ear is not None:
        from ca_service.relying_party.revocation import requests_fetcher
        from ca_service.relying_party.transparency import check_transparency

        index = verdict.ear.get("ca-service.log-index")
        check_transparency(verdict, verdict.certificate, log, fetch=fetch or requests_fetcher(), server=server,
                           bundle_text=proof, log_index=index if isinstance(index, int) else None)
    seal_verified(verdict, src, dst)
    return verdict


def unseal(private_key: Any, src: BinaryIO, dst: BinaryIO) -> str:
    """Decrypt a container ``seal`` wrote with the recipient's private key (a key object or PEM bytes,
    unencrypted) into ``dst``; returns the recipient certificate's serial (hex).

    ``dst`` receives each chunk as it authenticates: write to a temporary file and keep it only when
    this returns (the CLI does).

    Raises:
        UnsealFailed (``seal.open_failed``): not a PEM key, not a container, the wrong key, or tampered bytes.
    """
    from ca_service.errors import UnsealFailed
    from ca_service.relying_party.seal import unseal_stream

    if isinstance(private_key, (bytes, bytearray)):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            private_key = load_pem_private_key(bytes(private_key), password=None)
        except (ValueError, TypeError):
            raise UnsealFailed("the key is not an unencrypted PEM private key") from None
    return unseal_stream(private_key, src, dst)
