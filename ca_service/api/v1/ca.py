"""GET /v1/ca/chain (PEM), /v1/ca/issuing.cer (DER, for AIA caIssuers), /v1/ca/root.pem."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from ca_service.api.context import services

bp = Blueprint("ca", __name__, url_prefix="/v1/ca")


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
