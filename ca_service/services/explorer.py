"""Read models for the explorer pages and the search API.

Everything here composes the services the JSON API uses (``get_certificate``, the log's proof
bundles, the anchors, the policies, the integrity reports), so the HTML and the API cannot
disagree. The two queries that are new here (search, recent entries) are also served as JSON by
``GET /v1/certificates?...`` and ``GET /v1/log/recent``.

Nothing here trusts what it reads: every value that came from evidence, a CSR, a policy or a
report is handed to the templates as data, and Jinja escapes it there.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import String, cast, select

from ca_service.db.models import Certificate, TlogCheckpoint, TlogEntry
from ca_service.db.models.integrity import IntegrityReport
from ca_service.errors import CAServiceError, LogEntryNotFound, NotCheckpointed, RequestError
from ca_service.services.container import Services
from ca_service.tlog.leaves import decode_leaf

MAX_RESULTS = 50
_HEX = re.compile(r"[0-9a-f]+")
# Measurement registers a relying party searches by: TDX MRTD / RTMRs (48 bytes), SNP launch
# measurement (48 bytes), SGX MRENCLAVE / MRSIGNER (32 bytes), Nitro PCRs (48 bytes).
_MEASUREMENT_LENGTHS = (64, 96)


@dataclass(frozen=True)
class CertificateSummary:
    serial: str
    subject: str
    status: str
    policy: str
    policy_version: int
    issued_at: datetime
    not_after: datetime
    tee: str

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "subject": self.subject, "status": self.status,
                "policy": {"name": self.policy, "version": self.policy_version},
                "issued_at": self.issued_at.isoformat(), "not_after": self.not_after.isoformat(), "tee": self.tee}


@dataclass(frozen=True)
class SearchResult:
    query: str
    kind: str  # serial | spki_sha256+measurement | measurement | integrity_report | none
    certificates: tuple[CertificateSummary, ...] = ()
    report_id: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "kind": self.kind, "certificates": [c.to_json() for c in self.certificates],
                "integrity_report": self.report_id, "note": self.note}


def _tees(appraisal: dict[str, Any]) -> str:
    submods = (appraisal.get("ear") or {}).get("submods") or {}
    tees = [str(s.get("ca-service.tee", name)) for name, s in submods.items() if isinstance(s, dict)]
    return ", ".join(tees)


def _summary(row: Certificate) -> CertificateSummary:
    return CertificateSummary(serial=row.serial, subject=row.subject, status=row.status, policy=row.policy_name,
                              policy_version=row.policy_version, issued_at=row.issued_at,
                              not_after=row.not_after, tee=_tees(row.appraisal or {}))


def measurements_of(appraisal: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{submod: {register: hex}}`` from the EAR a certificate carries."""
    out: dict[str, dict[str, str]] = {}
    for name, sub in ((appraisal.get("ear") or {}).get("submods") or {}).items():
        if isinstance(sub, dict) and isinstance(sub.get("ca-service.measurements"), dict):
            out[name] = {str(k): str(v) for k, v in sub["ca-service.measurements"].items()}
    return out


def find_certificates(svc: Services, *, spki_sha256: str | None = None, measurement: str | None = None,
                      limit: int = MAX_RESULTS) -> list[CertificateSummary]:
    """Certificates for this key (SPKI SHA-256) or carrying this measurement, newest first.

    A measurement matches a register of any evidence item's EAR (MRTD, RTMRs, SNP launch
    measurement, MRENCLAVE...). The database narrows by text; the match itself is exact, on the
    parsed EAR.

    Raises:
        RequestError (``request.invalid``): neither, or a value that is not lowercase hex.
    """
    values = [v for v in (spki_sha256, measurement) if v is not None]
    if not values or any(not _HEX.fullmatch(v) or len(v) > 256 for v in values):
        raise RequestError("give spki_sha256 or measurement, as lowercase hex", where="query")
    limit = max(1, min(limit, MAX_RESULTS))
    with svc.db.read() as session:
        found: dict[str, Certificate] = {}
        if spki_sha256 is not None:
            q = select(Certificate).where(Certificate.spki_sha256 == spki_sha256)
            for row in session.execute(q.order_by(Certificate.issued_at.desc()).limit(limit)).scalars():
                found[row.serial] = row
        if measurement is not None:
            q = select(Certificate).where(cast(Certificate.appraisal, String).like(f"%{measurement}%"))
            for row in session.execute(q.order_by(Certificate.issued_at.desc()).limit(limit * 4)).scalars():
                regs = measurements_of(row.appraisal or {})
                if any(measurement == v for m in regs.values() for v in m.values()):
                    found[row.serial] = row
        rows = sorted(found.values(), key=lambda r: r.issued_at, reverse=True)[:limit]
        return [_summary(r) for r in rows]


def search(svc: Services, query: str) -> SearchResult:
    """What the explorer's search box does with ``query``: a serial, an SPKI SHA-256, a
    measurement, or an integrity report id."""
    from ca_service.services.issuance import get_certificate, normalise_serial

    q = query.strip().lower().removeprefix("0x").replace(":", "")
    if not q:
        return SearchResult(query=query, kind="none", note="type a serial, an SPKI SHA-256 or a measurement")
    try:
        report_id = str(uuid.UUID(q))
    except ValueError:
        report_id = None
    if report_id is not None:
        with svc.db.read() as session:
            if session.get(IntegrityReport, report_id) is not None:
                return SearchResult(query=query, kind="integrity_report", report_id=report_id)
    if not _HEX.fullmatch(q) or len(q) > 256:
        return SearchResult(query=query, kind="none", note="not a hex serial, digest or measurement")
    if len(q) <= 40:
        try:
            row = get_certificate(svc, normalise_serial(q))
            return SearchResult(query=query, kind="serial", certificates=(_summary(row),))
        except CAServiceError:
            pass
    if len(q) == 64:
        certs = find_certificates(svc, spki_sha256=q, measurement=q)
        return SearchResult(query=query, kind="spki_sha256+measurement", certificates=tuple(certs))
    if len(q) in _MEASUREMENT_LENGTHS:
        return SearchResult(query=query, kind="measurement", certificates=tuple(find_certificates(svc, measurement=q)))
    return SearchResult(query=query, kind="none", note="no certificate with this serial")


# --- the log ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntryView:
    index: int
    type: str
    at: str
    body: dict[str, Any]
    leaf_hash: str
    report_id: str | None = None  # integrity-report leaves: the stored report's id

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "at": self.at, "body": self.body,
                "leaf_hash": self.leaf_hash, "integrity_report": self.report_id}


def _entry_view(row: TlogEntry) -> LogEntryView:
    try:
        leaf = decode_leaf(bytes(row.leaf))
        kind, at, body = leaf.type, leaf.time, dict(leaf.body)
    except CAServiceError:
        kind, at, body = "undecodable", "", {}
    return LogEntryView(index=row.idx, type=kind, at=str(at), body=body, leaf_hash=bytes(row.leaf_hash).hex())


def recent_entries(svc: Services, *, limit: int = 50, before: int | None = None) -> list[LogEntryView]:
    """The newest log entries (all leaf types), decoded, newest first."""
    limit = max(1, min(limit, 200))
    with svc.db.read() as session:
        q = select(TlogEntry)
        if before is not None:
            q = q.where(TlogEntry.idx < before)
        rows = session.execute(q.order_by(TlogEntry.idx.desc()).limit(limit)).scalars().all()
        views = [_entry_view(r) for r in rows]
        digests = [str(v.body.get("report_sha256")) for v in views if v.type == "integrity-report"]
        ids = dict(session.execute(select(IntegrityReport.sha256, IntegrityReport.id)
                                   .where(IntegrityReport.sha256.in_(digests))).tuples().all()) if digests else {}
        return [replace(v, report_id=ids.get(str(v.body.get("report_sha256")))) if v.type == "integrity-report"
                else v for v in views]


def recent_checkpoints(svc: Services, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest published checkpoints: size, root, note digest, time."""
    with svc.db.read() as session:
        rows = session.execute(select(TlogCheckpoint).order_by(TlogCheckpoint.size.desc())
                               .limit(max(1, min(limit, 200)))).scalars().all()
        return [{"size": r.size, "root": bytes(r.root_hash).hex(), "note_sha256": r.note_sha256,
                 "created_at": r.created_at.isoformat()} for r in rows]


# --- one certificate --------------------------------------------------------------------------------


@dataclass
class ProofView:
    bundle: str | None = None
    verified: bool = False
    size: int | None = None
    root: str | None = None
    detail: str = ""


@dataclass
class CertificateView:
    row: Certificate
    pem: str
    cert: x509.Certificate
    sans: list[str]
    measurements: dict[str, dict[str, str]]
    submods: dict[str, dict[str, Any]]
    proof: ProofView
    anchor: dict[str, Any] | None
    log_entry: LogEntryView | None
    chain_pem: list[str] = field(default_factory=list)
    cvm_serial: str | None = None
    loaders: list[CertificateSummary] = field(default_factory=list)

    @property
    def ear(self) -> dict[str, Any]:
        return dict((self.row.appraisal or {}).get("ear") or {})


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(getattr(n, "value", n)) for n in ext]


def _proof(svc: Services, index: int | None) -> ProofView:
    from ca_service.services.log import log_verifier, proof_bundle_for_index
    from ca_service.tlog.bundle import ProofBundle

    if index is None:
        return ProofView(detail="this certificate has no log entry")
    try:
        text = proof_bundle_for_index(svc, index)
    except (NotCheckpointed, LogEntryNotFound) as exc:
        return ProofView(detail=exc.detail)
    try:
        bundle = ProofBundle.parse(text)
        if bundle.extra is None:
            return ProofView(bundle=text, detail="the bundle carries no leaf")
        cp = bundle.verify(bundle.extra, log_verifier(svc))
    except CAServiceError as exc:
        return ProofView(bundle=text, detail=f"[{exc.code}] {exc.detail}")
    return ProofView(bundle=text, verified=True, size=cp.size, root=cp.root_hash.hex(),
                     detail=f"leaf {index} is included in the signed checkpoint of size {cp.size}")


def cvm_serial_of(appraisal: dict[str, Any]) -> str | None:
    """The CVM certificate a loader certificate links to, where the EAR names one."""
    ear = appraisal.get("ear") or {}
    for holder in (appraisal, ear, *((ear.get("submods") or {}).values())):
        if isinstance(holder, dict):
            for key in ("cvm_serial", "ca-service.cvm-serial", "ca-service.cvm-certificate"):
                if isinstance(holder.get(key), str):
                    return str(holder[key])
    return None


def loaders_of(svc: Services, serial: str) -> list[CertificateSummary]:
    """Certificates whose EAR links to ``serial`` as their CVM certificate."""
    with svc.db.read() as session:
        # certificates.cvm_serial, set at issuance (services/loaders.py), indexed
        q = select(Certificate).where(Certificate.cvm_serial == serial).order_by(Certificate.issued_at)
        return [_summary(r) for r in session.execute(q.limit(MAX_RESULTS)).scalars()]


def certificate_view(svc: Services, serial: str) -> CertificateView:
    """Everything the certificate page shows, through the services the API uses.

    Raises:
        CertificateNotFound (``certificate.not_found``).
    """
    from ca_service.services.anchoring import anchor_covering
    from ca_service.services.issuance import get_certificate, normalise_serial

    row = get_certificate(svc, normalise_serial(serial))
    cert = x509.load_der_x509_certificate(row.der)
    ear = (row.appraisal or {}).get("ear") or {}
    submods = {str(k): v for k, v in (ear.get("submods") or {}).items() if isinstance(v, dict)}
    anchor = None
    if row.log_index is not None:
        view = anchor_covering(svc, row.log_index)
        anchor = view.to_json() if view is not None else None
    entry = None
    if row.log_index is not None:
        with svc.db.read() as session:
            er = session.get(TlogEntry, row.log_index)
            entry = _entry_view(er) if er is not None else None
    chain = [c.public_bytes(Encoding.PEM).decode()
             for c in (cert, svc.keys.certificate("issuing"), svc.keys.certificate("root"))]
    return CertificateView(row=row, pem=chain[0], cert=cert, sans=_sans(cert),
                           measurements=measurements_of(row.appraisal or {}), submods=submods,
                           proof=_proof(svc, row.log_index), anchor=anchor, log_entry=entry, chain_pem=chain,
                           cvm_serial=cvm_serial_of(row.appraisal or {}), loaders=loaders_of(svc, row.serial))


def certificate_sha256(view: CertificateView) -> str:
    return hashlib.sha256(view.row.der).hexdigest()


def list_integrity_reports(svc: Services, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest integrity reports: id, digest, signer serial, log index, times."""
    limit = max(1, min(limit, 200))
    with svc.db.read() as session:
        rows = session.execute(select(IntegrityReport).order_by(IntegrityReport.log_index.desc())
                               .limit(limit)).scalars().all()
        return [{"id": r.id, "sha256": r.sha256, "serial": r.serial, "order_id": r.order_id,
                 "log_index": r.log_index, "issued_at": r.issued_at.isoformat(),
                 "received_at": r.received_at.isoformat()} for r in rows]


def report_components(body: Any) -> list[dict[str, str]]:
    """The ``components`` of a parsed integrity report, as name/digest strings (empty if absent)."""
    if not isinstance(body, dict) or not isinstance(body.get("components"), list):
        return []
    return [{"name": str(c.get("name", "")), "digest": str(c.get("digest", ""))}
            for c in body["components"] if isinstance(c, dict)]
