"""POST /v1/certificates, GET /v1/certificates/{serial}."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ca_service.api.app import json_body
from ca_service.api.context import services
from ca_service.api.schemas import CertificateRequestIn, parse_model
from ca_service.services.issuance import CertificateRequest, get_certificate, issue_certificate

bp = Blueprint("certificates", __name__, url_prefix="/v1/certificates")


@bp.post("")
def post_certificate() -> ResponseReturnValue:
    body: CertificateRequestIn = parse_model(CertificateRequestIn, json_body())
    req = CertificateRequest(
        challenge_id=body.challenge_id,
        csr_pem=body.csr,
        policy=body.policy,
        evidence=tuple(e.to_item() for e in body.evidence),
        lifetime=timedelta(seconds=body.lifetime_seconds) if body.lifetime_seconds else None,
        cvm_serial=body.cvm_serial,
    )
    issued = issue_certificate(services(), req)
    from ca_service.api.metrics import ISSUED

    ISSUED.labels(issued.policy.policy.name).inc()
    return jsonify(issued.to_json()), 201


@bp.get("")
def find() -> ResponseReturnValue:
    """Certificates for a key or a measurement: ``?spki_sha256=HEX`` and/or ``?measurement=HEX``
    (any register of any evidence item's EAR: MRTD, RTMRn, SNP launch measurement, MRENCLAVE...)."""
    from flask import request

    from ca_service.services.explorer import find_certificates

    found = find_certificates(services(), spki_sha256=request.args.get("spki_sha256"),
                              measurement=request.args.get("measurement"))
    return jsonify(certificates=[c.to_json() for c in found])


@bp.get("/<serial>")
def get_one(serial: str) -> ResponseReturnValue:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    row = get_certificate(services(), serial)
    pem = x509.load_der_x509_certificate(row.der).public_bytes(Encoding.PEM).decode()
    return jsonify(
        serial=row.serial, status=row.status, subject=row.subject, issued_at=row.issued_at.isoformat(),
        not_before=row.not_before.isoformat(), not_after=row.not_after.isoformat(), spki_sha256=row.spki_sha256,
        policy={"name": row.policy_name, "version": row.policy_version, "digest": row.policy_digest},
        evidence=row.evidence, appraisal=row.appraisal, log_index=row.log_index,
        revoked_at=row.revoked_at.isoformat() if row.revoked_at else None, revocation_reason=row.revocation_reason,
        certificate=pem,
    )


@bp.get("/<serial>/proof")
def get_proof(serial: str) -> ResponseReturnValue:
    """The ``c2sp.org/tlog-proof@v1`` bundle for the certificate's log entry, once a checkpoint
    covers it (404 ``log.not_checkpointed`` before). ``?size=N``: under the published checkpoint of
    size N instead of the latest (an anchored size: the proof a relying party checks against that
    anchor). With ``Accept: application/json``: the bundle and the chain anchor that covers it, if any."""
    from flask import Response, request

    from ca_service.errors import ProofUnavailable
    from ca_service.services.log import proof_bundle_for_index

    svc = services()
    raw_size = request.args.get("size")
    size = None
    if raw_size is not None:
        import re

        if not re.fullmatch(r"0|[1-9][0-9]{0,18}", raw_size) or int(raw_size) > 2**63 - 1:
            raise ProofUnavailable("size must be an integer in 0..2^63-1", size=raw_size[:40])
        size = int(raw_size)
    row = get_certificate(svc, serial)
    if row.log_index is None:
        from ca_service.errors import NotFound

        raise NotFound("this certificate has no log entry")
    bundle = proof_bundle_for_index(svc, row.log_index, size)
    if request.accept_mimetypes.best == "application/json":
        anchor = None
        try:
            from ca_service.services.anchoring import anchor_covering

            view = anchor_covering(svc, row.log_index)
            anchor = view.to_json() if view is not None else None
        except ImportError:
            anchor = None
        return jsonify(serial=row.serial, log_index=row.log_index, bundle=bundle, anchor=anchor)
    return Response(bundle, mimetype="text/plain")


@bp.post("/<serial>/revoke")
def revoke(serial: str) -> ResponseReturnValue:
    """Revoke (admin): ``{"reason": "<RFC 5280 reason name>"}``; logged and audited."""
    from ca_service.api.auth import ADMIN, current_principal
    from ca_service.services.revocation import revoke as revoke_certificate

    who = current_principal(ADMIN)
    body = json_body()
    reason = body.get("reason", "unspecified") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        from ca_service.errors import SchemaViolation

        raise SchemaViolation("reason must be a string", field="reason")
    from ca_service.services.loaders import loaders_of

    row = revoke_certificate(services(), serial, reason=reason, actor=who.actor)
    # revoking a CVM certificate revoked its loaders' with it (docs/loader.md)
    loaders = [{"serial": loader, "status": status} for loader, status in loaders_of(services(), row.serial)]
    return jsonify(serial=row.serial, status=row.status, revoked_at=row.revoked_at.isoformat() if row.revoked_at
                   else None, reason=row.revocation_reason, loaders=loaders)
