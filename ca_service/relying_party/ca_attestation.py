"""The CA's own attestation, checked by a relying party (DESIGN.md "the CA in confidential mode").

``GET /v1/ca/attestation?nonce=N`` returns the CA's TEE evidence, bound (ADR 0001) to the
caller's fresh nonce and to the issuing CA's key: report data =
``SHA-512("ca-service/binding/v1" || nonce || SHA-256(issuing CA SPKI DER))``. This module checks,
each as its own step, that the issuing CA certificate chains to the pinned root, that the evidence
is genuine (the same verifiers as issuance: TDX, SNP, ...; the sim only with a pinned sim root and
``accept_insecure``), that it is bound to this nonce and this key, and every expectation.
Nothing here does IO; ``fetch_ca_attestation`` is the network edge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ca_service.relying_party import PASS, WARN, Verdict
from ca_service.relying_party.expect import Expectation
from ca_service.relying_party.revocation import Fetcher

if TYPE_CHECKING:
    from ca_service.evidence.trust import TrustRoots

NONCE_BYTES = 32


@dataclass(frozen=True)
class CaAttestation:
    """The parsed response (nothing in it is trusted yet)."""

    kind: str
    evidence: bytes
    nonce: bytes
    issuing: x509.Certificate
    profile: str
    collateral: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, doc: Any) -> CaAttestation:
        """Raises ValueError: not the documented shape."""
        if not isinstance(doc, dict):
            raise ValueError("the attestation response is not a JSON object")
        try:
            kind, profile = str(doc["type"]), str(doc.get("profile", "production"))
            evidence = base64.b64decode(doc["evidence"], validate=True)
            nonce = bytes.fromhex(doc["nonce"])
            issuing = x509.load_pem_x509_certificate(str(doc["key"]).encode())
            collateral = tuple(base64.b64decode(c, validate=True) for c in doc.get("collateral") or ())
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"the attestation response is malformed ({type(exc).__name__})") from exc
        return cls(kind, evidence, nonce, issuing, profile, collateral)


def fresh_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def fetch_ca_attestation(server: str, nonce: bytes, fetch: Fetcher) -> Any:
    """``GET {server}/v1/ca/attestation?nonce=HEX`` as JSON (the transport's errors propagate)."""
    return json.loads(fetch(f"{server.rstrip('/')}/v1/ca/attestation?nonce={nonce.hex()}", None, None))


def claims_view(kind: str, claims: dict[str, Any], profile: str, tcb_status: str | None) -> dict[str, Any]:
    """The evidence's claims in the EAR's shape, so ``--expect`` names mean the same as for a
    certificate (``tee``, ``profile``, measurement registers, ``ca-service.X`` claims). There is no
    appraisal here, so ``status`` and ``policy`` are absent (an expectation on them fails)."""
    from ca_service.ca.ear import _MEASUREMENT_CLAIMS

    sub: dict[str, Any] = {f"ca-service.{k.replace('_', '-')}": v for k, v in claims.items()}
    sub.update({"ca-service.tee": kind, "ca-service.tcb-status": tcb_status,
                "ca-service.measurements": {k: claims[k] for k in _MEASUREMENT_CLAIMS if k in claims}})
    return {"ca-service.profile": profile, "submods": {kind: sub}}


def verify_ca_attestation(att: CaAttestation, root: x509.Certificate, *, nonce: bytes, at: datetime,
                          sim_root: x509.Certificate | None = None, collateral: Sequence[bytes] = (),
                          expectations: Sequence[Expectation] = (), accept_insecure: bool = False,
                          roots: TrustRoots | None = None) -> Verdict:
    """Check the CA's attestation ``att``, fetched with ``nonce``, against the pinned ``root``.

    ``roots``: the vendor roots the evidence must chain to (default: the pinned vendor roots,
    ``evidence.trust.DEFAULT_ROOTS``)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from ca_service import evidence as ev
    from ca_service.ca.verify import verify_certificate as check_chain
    from ca_service.errors import CAServiceError
    from ca_service.evidence.binding import binding_value
    from ca_service.evidence.trust import DEFAULT_ROOTS

    verdict = Verdict(certificate=att.issuing)
    # (1) the issuing CA certificate chains to the pinned root and is valid at `at`
    base = check_chain([att.issuing], root, at, accept_insecure=True)
    for c in base.checks:
        if c.name != "attestation_result":  # chain, signature, basic_constraints, validity (a CA has no EAR)
            verdict.add("ca_" + c.name, c.passed, c.detail)
    is_ca = att.issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca \
        if _has(att.issuing, x509.BasicConstraints) else False
    verdict.add("ca_certificate", is_ca, "a CA certificate (basicConstraints cA)" if is_ca
                else "the attested key's certificate is not a CA certificate")
    # (2) the profile: a CA outside any TEE (the sim) only with --accept-insecure
    insecure = att.profile == "insecure-dev" or att.kind == "sim"
    if insecure and not accept_insecure:
        verdict.add("profile", False, f"the CA runs in the {att.profile} profile with {att.kind} evidence (no hardware "
                                      "vouches for it); --accept-insecure accepts it")
    elif insecure:
        verdict.note("profile", WARN, f"{att.profile} CA with {att.kind} evidence, accepted by --accept-insecure")
    else:
        verdict.add("profile", True, f"profile {att.profile}")
    # (3) the evidence is genuine, with the same verifiers as issuance
    roots = roots if roots is not None else DEFAULT_ROOTS
    if att.kind == "sim":
        if sim_root is None:
            verdict.add("evidence", False, "sim evidence needs the deployment's sim root pinned (--sim-root)")
            return verdict
        roots = roots.with_sim_root(sim_root.public_bytes(Encoding.DER))
    try:
        verified = ev.verify(att.kind, att.evidence, collateral=[*collateral, *att.collateral], at=at, roots=roots)
    except CAServiceError as exc:
        verdict.add("evidence", False, f"{att.kind}: [{exc.code}] {exc.detail}")
        return verdict
    verdict.add("evidence", True, f"{att.kind} evidence genuine at {at.isoformat()}"
                + (f", TCB {verified.tcb_status}" if verified.tcb_status else ""))
    # (4) bound to our fresh nonce and to the issuing CA's key (ADR 0001)
    want = binding_value(nonce, att.issuing.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    echoed = hmac.compare_digest(att.nonce, nonce)
    bound = hmac.compare_digest(bytes(verified.report_data[: len(want)]), want)
    verdict.add("binding", bound and echoed,
                "report data = SHA-512(binding || our nonce || SHA-256(issuing CA SPKI))" if bound and echoed
                else ("the evidence is not bound to our nonce and the issuing CA's key" if not bound
                      else "the response answers another nonce"))
    view = claims_view(att.kind, dict(verified.claims), att.profile, verified.tcb_status)
    verdict.ear = view
    for e in expectations:
        ok, detail = e.check(view)
        verdict.add(f"expect {e.key}", ok, detail)
    return verdict


def _has(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(ext)
        return True
    except x509.ExtensionNotFound:
        return False


__all__ = ["CaAttestation", "PASS", "fetch_ca_attestation", "fresh_nonce", "verify_ca_attestation"]
