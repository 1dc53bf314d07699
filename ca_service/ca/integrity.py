"""Loader-signed integrity reports: parse, build, sign, verify (PURE; DESIGN.md flow 2).

A trusted loader holding a certificate of this CA lists every component it loaded in a report, an
RFC 8785 canonical JSON document (schema: ``docs/integrity-report.schema.json``, prose:
``docs/integrity-report.md``), and signs ``SIGNING_CONTEXT || report`` with its certified key.
The exact bytes are what is signed, hashed, stored and logged; nothing downstream re-serialises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ca_service import boundedjson
from ca_service.errors import (
    InclusionProofInvalid,
    IntegrityAlgMismatch,
    IntegrityCertificateExpired,
    IntegrityCertificateUnknown,
    IntegrityCertificateUntrusted,
    IntegrityComponentNotMeasured,
    IntegrityReportMalformed,
    IntegrityReportNotCanonical,
    IntegritySignatureInvalid,
)
from ca_service.tlog.bundle import ProofBundle
from ca_service.tlog.checkpoint import Checkpoint, NoteVerifier
from ca_service.tlog.leaves import decode_leaf

REPORT_VERSION = 1
MAX_REPORT_BYTES = 64 * 1024
MAX_COMPONENTS = 256
MAX_SIGNATURE_BYTES = 256
# Domain separation: the loader's key also authenticates TLS (clientAuth); a signature over a
# report must never be usable as, or be made from, a signature over anything else.
SIGNING_CONTEXT = b"ca-service/integrity-report/v1\n"

# alg name -> (key check, hash); ECDSA signatures are DER (RFC 3279 Ecdsa-Sig-Value), Ed25519 is RFC 8032.
ALGS = ("ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519")
DIGEST_ALGS = {"sha256": 64, "sha384": 96, "sha512": 128}

# Patterns use explicit ASCII classes: pydantic's regex engine treats \d as any Unicode digit.
NAME_PATTERN = r"^[A-Za-z0-9._:@/+-]{1,128}$"  # the log leaf's token alphabet (tlog/leaves.py)
SERIAL_PATTERN = r"^(0|[1-9a-f][0-9a-f]{0,39})$"  # lower-case hex, no leading zero, <= 20 octets
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
DIGEST_PATTERN = r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$"

Token = Annotated[str, Field(pattern=NAME_PATTERN)]
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]


class ComponentModel(BaseModel):
    """One loaded component: a name unique in the report and the digest of its bytes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Token
    digest: Digest


class IntegrityReportModel(BaseModel):
    """Version 1 integrity report. Unknown fields are refused at every level."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, title="IntegrityReport",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://ca-service.example/schemas/integrity-report-v1.json",
            "description": "A trusted loader's signed list of every component it loaded (RFC 8785 canonical "
                           "JSON; component names are unique). See docs/integrity-report.md.",
        })

    v: Literal[1]
    order_id: Token
    loader_certificate_serial: Annotated[str, Field(pattern=SERIAL_PATTERN)]
    issued_at: Annotated[str, Field(pattern=TIME_PATTERN)]
    components: list[ComponentModel] = Field(min_length=1, max_length=MAX_COMPONENTS)
    arguments_digest: Digest

    @field_validator("v", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        # Literal[1] compares with ==, so True and 1.0 would pass: JSON true is not the number 1.
        if type(value) is not int:
            raise ValueError("v must be the integer 1")
        return value

    @field_validator("issued_at")
    @classmethod
    def _real_time(cls, value: str) -> str:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")  # ValueError: no such date or time
        return value

    @field_validator("components")
    @classmethod
    def _unique_names(cls, value: list[ComponentModel]) -> list[ComponentModel]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError("component names must be unique")
        return value


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version 1 report, as kept in ``docs/``."""
    return IntegrityReportModel.model_json_schema()


@dataclass(frozen=True)
class Component:
    """A loaded component (name, ``<alg>:<hex>`` digest)."""

    name: str
    digest: str


@dataclass(frozen=True)
class IntegrityReport:
    """A parsed, canonical report; ``raw`` keeps the exact bytes that were signed."""

    raw: bytes
    order_id: str
    loader_certificate_serial: str
    issued_at: datetime
    components: tuple[Component, ...]
    arguments_digest: str

    @property
    def sha256(self) -> str:
        """SHA-256 of the report bytes: its identity (duplicates are the same report)."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def components_sha256(self) -> str:
        """SHA-256 of the RFC 8785 form of the ``components`` array (named in the log leaf)."""
        return hashlib.sha256(rfc8785.dumps(_components_json(self.components))).hexdigest()

    def document(self) -> dict[str, Any]:
        """The report as a JSON object (a fresh copy)."""
        obj: dict[str, Any] = json.loads(self.raw)
        return obj


def _components_json(components: Sequence[Component]) -> list[dict[str, str]]:
    return [{"name": c.name, "digest": c.digest} for c in components]


def parse_report(data: bytes) -> IntegrityReport:
    """Parse report bytes at the edge.

    Steps: (1) size and UTF-8 JSON; (2) RFC 8785: the bytes must equal the canonical
    re-serialisation of what they parse to (this also refuses duplicate keys, which a JSON parser
    would silently collapse, and non-integer numbers); (3) the version 1 schema, unknown fields refused.

    Raises:
        IntegrityReportMalformed (``integrity.malformed``): (1) or (3).
        IntegrityReportNotCanonical (``integrity.not_canonical``): (2).
    """
    # (1)
    if not data or len(data) > MAX_REPORT_BYTES:
        raise IntegrityReportMalformed(f"a report is 1..{MAX_REPORT_BYTES} bytes", size=len(data))
    try:
        obj = boundedjson.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityReportMalformed("report is not UTF-8 JSON") from exc
    # (2) RFC 8785 section 3: the canonical form is unique, so compare bytes.
    try:
        canonical = rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise IntegrityReportNotCanonical("report cannot be canonicalised (RFC 8785)") from exc
    if canonical != data:
        raise IntegrityReportNotCanonical("report bytes differ from their RFC 8785 canonical form")
    # (3)
    try:
        model = IntegrityReportModel.model_validate(obj)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:20]]
        first = errors[0] if errors else {"field": "", "message": "invalid"}
        raise IntegrityReportMalformed(f"{first['field'] or 'report'}: {first['message']}", errors=errors) from None
    return IntegrityReport(
        raw=data,
        order_id=model.order_id,
        loader_certificate_serial=model.loader_certificate_serial,
        issued_at=datetime.strptime(model.issued_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        components=tuple(Component(c.name, c.digest) for c in model.components),
        arguments_digest=model.arguments_digest,
    )


def build_report(*, order_id: str, loader_certificate_serial: int | str, issued_at: datetime,
                 components: Sequence[Component], arguments_digest: str) -> IntegrityReport:
    """Build the canonical report bytes (the loader side) and parse them back.

    Raises:
        IntegrityReportMalformed (``integrity.malformed``): a field outside the schema.
    """
    if issued_at.tzinfo is None:
        raise IntegrityReportMalformed("issued_at must be timezone-aware")
    serial = loader_certificate_serial
    doc: dict[str, Any] = {
        "v": REPORT_VERSION,
        "order_id": order_id,
        "loader_certificate_serial": format(serial, "x") if isinstance(serial, int) else serial,
        "issued_at": issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "components": _components_json(components),
        "arguments_digest": arguments_digest,
    }
    return parse_report(rfc8785.dumps(doc))


def digest_of(data: bytes, alg: str = "sha384") -> str:
    """``<alg>:<hex>`` digest of ``data`` (sha256, sha384 or sha512)."""
    if alg not in DIGEST_ALGS:
        raise IntegrityReportMalformed(f"digest algorithm must be one of {', '.join(DIGEST_ALGS)}")
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


# --- signatures -------------------------------------------------------------------------------------


def signing_input(report_bytes: bytes) -> bytes:
    """The exact bytes signed: ``SIGNING_CONTEXT || report``."""
    return SIGNING_CONTEXT + report_bytes


def alg_for_key(public_key: object) -> str:
    """The one signature algorithm accepted for this key.

    Raises:
        IntegrityAlgMismatch (``integrity.alg_mismatch``): no algorithm for this key type.
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return "ecdsa-p256-sha256"
        if isinstance(public_key.curve, ec.SECP384R1):
            return "ecdsa-p384-sha384"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise IntegrityAlgMismatch("the certificate's key type cannot sign integrity reports")


def sign_report(private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
                report: IntegrityReport) -> tuple[bytes, str]:
    """Sign a report (the loader side); returns ``(signature, alg)``."""
    alg = alg_for_key(private_key.public_key())
    message = signing_input(report.raw)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message), alg
    h: hashes.HashAlgorithm = hashes.SHA256() if alg == "ecdsa-p256-sha256" else hashes.SHA384()
    return private_key.sign(message, ec.ECDSA(h)), alg


def verify_report_signature(report: IntegrityReport, signature: bytes, alg: str, public_key: object) -> None:
    """Check ``signature`` over ``signing_input(report.raw)`` with the certificate's key.

    The algorithm is fixed by the key (no curve/hash mixing); ``alg`` must name it.

    Raises:
        IntegrityAlgMismatch (``integrity.alg_mismatch``): ``alg`` is not this key's algorithm.
        IntegritySignatureInvalid (``integrity.signature_invalid``): the signature does not verify.
    """
    expected = alg_for_key(public_key)
    if alg != expected:
        raise IntegrityAlgMismatch(f"the certificate's key signs with {expected}, not {alg!r}", expected=expected)
    if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise IntegritySignatureInvalid("signature has an impossible length")
    message = signing_input(report.raw)
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            # OpenSSL refuses non-DER (BER) encodings of Ecdsa-Sig-Value here.
            h: hashes.HashAlgorithm = hashes.SHA256() if alg == "ecdsa-p256-sha256" else hashes.SHA384()
            public_key.verify(signature, message, ec.ECDSA(h))
        else:  # unreachable: alg_for_key accepted the key
            raise IntegrityAlgMismatch("unsupported key type")
    except (InvalidSignature, ValueError) as exc:
        raise IntegritySignatureInvalid("the signature does not verify with the certificate's key") from exc


# --- what the loader measured ----------------------------------------------------------------------

ARGUMENTS_ROLE = "args"


def measured_components(ear: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(role, digest) of every component the loader measured into its event log, as the EAR of its
    certificate records them (``ca-service.loaded`` of each evidence item; docs/event-log.md)."""
    out: list[tuple[str, str]] = []
    for sub in (ear.get("submods") or {}).values():
        loaded = sub.get("ca-service.loaded") if isinstance(sub, dict) else None
        if isinstance(loaded, list):
            out += [(e["role"], e["digest"]) for e in loaded
                    if isinstance(e, dict) and isinstance(e.get("role"), str) and isinstance(e.get("digest"), str)]
    return tuple(out)


def check_measured(report: IntegrityReport, measured: Sequence[tuple[str, str]], roles: Sequence[str]) -> None:
    """Each role in ``roles`` (a loader policy's ``integrity_reports.measured``) must match the log:
    every report component named ``<role>`` or ``<role>/<anything>`` carries a digest the loader
    measured under that role, and there is at least one such component; the role ``args`` is the
    report's ``arguments_digest``. A role the report omits is a refusal, not a pass.

    Raises:
        IntegrityComponentNotMeasured (``integrity.component_not_measured``): names the role and component.
    """
    for role in roles:
        allowed = {d for r, d in measured if r == role}
        if role == ARGUMENTS_ROLE:
            entries = [("arguments_digest", report.arguments_digest)]
        else:
            entries = [(c.name, c.digest) for c in report.components
                       if c.name == role or c.name.startswith(role + "/")]
        if not entries:
            raise IntegrityComponentNotMeasured(
                f"the loader's policy requires the report to list its {role!r} component, measured in the log",
                role=role)
        for name, digest in entries:
            if digest not in allowed:
                raise IntegrityComponentNotMeasured(
                    f"component {name!r} has digest {digest}, which the loader did not measure as {role!r} "
                    "into its event log", role=role, component=name, digest=digest, measured=sorted(allowed))


# --- the signing certificate ------------------------------------------------------------------------


def check_signing_certificate(cert: x509.Certificate, issuer: x509.Certificate, *,
                              times: Sequence[datetime]) -> None:
    """The report's certificate: issued by ``issuer``, usable for signatures, valid at each of ``times``.

    Raises:
        IntegrityCertificateUntrusted (``integrity.certificate_untrusted``): not signed by the
            issuer, or not a signing end-entity certificate.
        IntegrityCertificateExpired (``integrity.certificate_expired``): outside its validity.
    """
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise IntegrityCertificateUntrusted("the certificate is not signed by this CA's issuing key") from exc
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise IntegrityCertificateUntrusted("the certificate lacks keyUsage or basicConstraints") from exc
    if not ku.digital_signature or bc.ca:
        raise IntegrityCertificateUntrusted("the certificate is not an end-entity signing certificate")
    for at in times:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise IntegrityCertificateExpired(
                f"the certificate is not valid at {at.astimezone(UTC).isoformat()}",
                not_before=cert.not_valid_before_utc.isoformat(), not_after=cert.not_valid_after_utc.isoformat())


# --- the signed report file (CLI) and the relying party's offline check -----------------------------


class SignedReportFile(BaseModel):
    """``report.json`` as ``ca-service integrity sign`` writes it: the POST body plus the chain."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    report: str = Field(min_length=1, max_length=MAX_REPORT_BYTES * 2)
    signature: str = Field(min_length=1, max_length=MAX_SIGNATURE_BYTES * 2)
    alg: Literal["ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519"]
    certificate_chain: str = Field(min_length=1, max_length=64 * 1024)


@dataclass(frozen=True)
class SignedReport:
    """A report with its signature and the signer's chain (leaf first)."""

    report: IntegrityReport
    signature: bytes
    alg: str
    chain: tuple[x509.Certificate, ...]

    def post_body(self) -> dict[str, str]:
        """The ``POST /v1/integrity-reports`` body."""
        return {"report": b64(self.report.raw), "signature": b64(self.signature), "alg": self.alg}

    def to_file_json(self) -> dict[str, str]:
        """The signed report file (``report.json``)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in self.chain)
        return {**self.post_body(), "certificate_chain": pem}


def b64(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode()


def b64decode(value: str, what: str) -> bytes:
    """Strict standard base64.

    Raises:
        IntegrityReportMalformed (``integrity.malformed``).
    """
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise IntegrityReportMalformed(f"{what} is not valid base64") from exc


def load_signed_report(data: bytes) -> SignedReport:
    """Parse a signed report file.

    Raises:
        IntegrityReportMalformed (``integrity.malformed``), IntegrityReportNotCanonical.
    """
    try:
        f = SignedReportFile.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityReportMalformed(f"not a signed report file: {exc.errors()[0]['msg']}") from None
    try:
        chain = tuple(x509.load_pem_x509_certificates(f.certificate_chain.encode()))
    except ValueError as exc:
        raise IntegrityReportMalformed("certificate_chain is not PEM certificates") from exc
    return SignedReport(report=parse_report(b64decode(f.report, "report")),
                        signature=b64decode(f.signature, "signature"), alg=f.alg, chain=chain)


def verify_signed_report(signed: SignedReport, root: x509.Certificate, at: datetime) -> None:
    """The relying party's offline check, trusting ``root`` alone.

    (1) the chain's leaf is the certificate the report names; (2) each certificate is signed by the
    next, up to ``root`` (never a root carried in the file); (3) the leaf is a signing end entity
    valid at the report's time and at ``at``; (4) the signature. Revocation is not checked here
    (use the CRL or OCSP); the service checks it on submission.

    Raises:
        IntegrityCertificateUnknown, IntegrityCertificateUntrusted, IntegrityCertificateExpired,
        IntegrityAlgMismatch, IntegritySignatureInvalid.
    """
    chain = [c for c in signed.chain if c != root]
    # (1)
    if not chain or format(chain[0].serial_number, "x") != signed.report.loader_certificate_serial:
        raise IntegrityCertificateUnknown("the chain's first certificate is not the one the report names")
    # (2) intermediates up to the pinned root
    path = [*chain, root]
    for child, parent in zip(path[1:], path[2:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
            if not parent.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise IntegrityCertificateUntrusted("an issuer in the chain is not a CA")
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as exc:
            raise IntegrityCertificateUntrusted("the chain does not verify to the given root") from exc
        if not child.not_valid_before_utc <= at <= child.not_valid_after_utc:
            raise IntegrityCertificateExpired("an issuer in the chain is outside its validity")
    issuer = path[1]
    if len(path) > 2:
        try:
            if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise IntegrityCertificateUntrusted("the leaf's issuer is not a CA")
        except x509.ExtensionNotFound as exc:
            raise IntegrityCertificateUntrusted("the leaf's issuer has no basicConstraints") from exc
    # (3)
    check_signing_certificate(chain[0], issuer, times=(signed.report.issued_at, at))
    # (4)
    verify_report_signature(signed.report, signed.signature, signed.alg, chain[0].public_key())


def check_report_proof(report: IntegrityReport, bundle_text: str, vkey: str) -> Checkpoint:
    """Check a ``tlog-proof@v1`` bundle whose ``extra`` carries this report's log leaf.

    The leaf must be an ``integrity-report`` leaf naming this report's SHA-256, signer serial,
    order id and components digest, included under a checkpoint signed by ``vkey``.

    Raises:
        InclusionProofInvalid (``log.inclusion_proof_invalid``): the leaf is not this report's or
            is not included; CheckpointInvalid / CheckpointSignatureInvalid for the note.
    """
    bundle = ProofBundle.parse(bundle_text)
    if bundle.extra is None:
        raise InclusionProofInvalid("the proof bundle does not carry the leaf")
    leaf = decode_leaf(bundle.extra)
    expected = {"report_sha256": report.sha256, "loader_serial": report.loader_certificate_serial,
                "order_id": report.order_id, "components_sha256": report.components_sha256}
    if leaf.type != "integrity-report" or dict(leaf.body) != expected:
        raise InclusionProofInvalid("the logged leaf is not this report's", index=bundle.index)
    return bundle.verify(bundle.extra, NoteVerifier.from_vkey(vkey))
