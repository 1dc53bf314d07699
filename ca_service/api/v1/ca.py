"""GET /v1/ca/chain (PEM), /v1/ca/issuing.cer (DER, for AIA caIssuers), /v1/ca/crl, /v1/ca/root.crl (ARL)."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from ca_service.api.context import services

bp = Blueprint("ca", __name__, url_prefix="/v1/ca")
NONCE_PATTERN = r"^[0-9a-fA-F]{64}$"  # GET /v1/ca/attestation?nonce= (docs/openapi.json states it)


@bp.get("/chain")
def chain() -> ResponseReturnValue:
    from cryptography.hazmat.primitives.serialization import Encoding

    svc = services()
    pem = b"".join(svc.keys.certificate(r).public_bytes(Encoding.PEM) for r in ("issuing", "root"))
    return Response(pem, mimetype="application/pem-certificate-chain",
                    headers={"Cache-Control": "public, max-age=300"})


@bp.get("/issuing.cer")
def issuing_der() -> ResponseReturnValue:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = services().keys.certificate("issuing").public_bytes(Encoding.DER)
    return Response(der, mimetype="application/pkix-cert", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/crl")
def crl() -> ResponseReturnValue:
    """The issuing CA's CRL (DER), as named by every certificate's CRL distribution point."""
    from ca_service.services.revocation import current_crl

    return Response(current_crl(services()), mimetype="application/pkix-crl",
                    headers={"Cache-Control": "public, max-age=60"})


@bp.get("/root.crl")
def root_arl() -> ResponseReturnValue:
    """The root's ARL (DER): revoked CA certificates, named by the issuing CA's CRL distribution point."""
    from ca_service.services.root_arl import current_arl

    return Response(current_arl(services()), mimetype="application/pkix-crl",
                    headers={"Cache-Control": "public, max-age=300"})


def _own_collateral(svc: object, kind: str, evidence: bytes) -> tuple[bytes, ...]:
    """The vendor collateral the CA holds for its own evidence (TDX/SNP), from its cache only, so a
    relying party can verify offline; every item is signed by the vendor and checked to the pinned
    roots by the client. Nothing when none is cached (the client may bring its own)."""
    from ca_service.errors import CAServiceError
    from ca_service.evidence.needs import SUPPLIED_KINDS
    from ca_service.services import collateral as cs

    if kind not in SUPPLIED_KINDS:
        return ()
    try:
        return cs.collateral_for(svc, kind, evidence, svc.clock.now())  # type: ignore[arg-type, attr-defined]
    except CAServiceError:
        return ()


@bp.get("/sim-root.pem")
def sim_root() -> ResponseReturnValue:
    """insecure-dev only: the sim TEE's root, for a relying party to pin in ``ca-service verify-ca
    --sim-root`` (it proves nothing about hardware). 404 in production."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.errors import NotFound

    svc = services()
    if not svc.settings.insecure or not svc.keys.has("sim-root"):
        raise NotFound("this CA has no sim TEE (production profile)")
    pem = svc.keys.certificate("sim-root").public_bytes(Encoding.PEM)
    return Response(pem, mimetype="application/x-pem-file", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/attestation")
def attestation() -> ResponseReturnValue:
    """The CA's own evidence, bound (ADR 0001) to ``?nonce=<64 hex>`` and the issuing CA's key.

    In a TEE it comes from configfs-tsm; in the insecure-dev profile from the sim TEE (and says so);
    a production CA outside a TEE answers 503 ``ca.not_in_tee``.
    """
    import base64
    import warnings

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from flask import jsonify, request

    from ca_service.agent.tsm import tsm_available, tsm_report
    from ca_service.errors import NotInTee, SchemaViolation
    from ca_service.evidence.binding import binding_value

    svc = services()
    import re

    raw = request.args.get("nonce", "")
    if not re.fullmatch(NONCE_PATTERN, raw):  # bytes.fromhex alone also takes spaces between bytes
        raise SchemaViolation("nonce must be 32 bytes of hex (64 hex digits)", field="nonce")
    nonce = bytes.fromhex(raw)
    issuing = svc.keys.certificate("issuing")
    spki = issuing.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    report_data = binding_value(nonce, spki)
    if tsm_available():
        kind, evidence = tsm_report(report_data)
    elif svc.settings.insecure:
        from ca_service.services.bootstrap import load_sim_tee

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tee = load_sim_tee(svc.settings)
        kind, evidence = "sim", tee.report(report_data)  # type: ignore[attr-defined]
    else:
        raise NotInTee("this CA does not run in a TEE; it has no evidence to give")
    return jsonify(profile=svc.settings.profile, type=kind, evidence=base64.b64encode(evidence).decode(),
                   nonce=nonce.hex(), key=issuing.public_bytes(Encoding.PEM).decode(),
                   collateral=[base64.b64encode(c).decode() for c in _own_collateral(svc, kind, evidence)],
                   binding="SHA-512('ca-service/binding/v1' || nonce || SHA-256(issuing CA SPKI DER))")
