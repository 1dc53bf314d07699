"""Certificates as issuance records them, for real quotes judged by their own collateral at their own
time (real quotes cannot be bound to a fresh challenge, so the row is written directly): what the
re-appraisal tests start from."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from ca_service.ca.ear import build_ear
from ca_service.db.models import Certificate, EvidenceBlob
from ca_service.evidence import verify
from ca_service.policy.appraise import appraise
from tests.vectors.manifest import load_manifest


def vector(path: str, collateral_prefix: str = "") -> Any:
    """The manifest entry of ``path`` (the one whose collateral directory starts with the prefix)."""
    return next(v for v in load_manifest()
                if v.path == path and v.files.get("collateral", "").startswith(collateral_prefix))


def certificate_der(svc: Any, serial: str, at: datetime) -> bytes:
    """A certificate body under ``serial``, signed by the CA's issuing key and valid until a day from
    now (the CRL lists only what that key issued and has not expired)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    issuer = svc.keys.certificate("issuing")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(int(serial, 16)).not_valid_before(at).not_valid_after(svc.clock.now() + timedelta(hours=24))
            .sign(svc.keys.private_key("issuing"), hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def record(svc: Any, ref: Any, v: Any, kind: str = "tdx-quote", evidence: bytes | None = None,
           collateral: list[bytes] | None = None, **verify_options: Any) -> str:
    """A valid certificate row for vector ``v`` under policy version ``ref``, judged by the vector's
    collateral (or ``collateral``) at its verify_time (the appraisal must pass); its serial. The sent
    collateral is kept as issuance keeps it: each certificate and CRL as a DER blob."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.evidence.collateral_items import load_collateral

    data = evidence if evidence is not None else v.read("quote")
    sent = collateral if collateral is not None else [v.read("collateral")]
    ve = verify(kind, data, collateral=sent, at=v.verify_time, **verify_options)
    result = appraise(ref.policy, [ve], insecure_allowed=False)
    assert result.passed, [c.claim for c in result.failed]
    ear = build_ear([ve], result, policy_id=ref.id, issued_at=v.verify_time)
    serial = uuid.uuid4().hex.lstrip("0")
    digest = hashlib.sha256(data).hexdigest()
    der = certificate_der(svc, serial, v.verify_time)
    kept = {}
    if collateral is not None:
        coll = load_collateral(collateral, keep_unparsed_crls=True)
        kept = {hashlib.sha256(b).hexdigest(): b for b in [c.public_bytes(Encoding.DER) for c in coll.certificates]
                + [c.public_bytes(Encoding.DER) for c in coll.crls]}
    with svc.db.transaction() as session:
        for d, b in kept.items():
            if session.get(EvidenceBlob, d) is None:
                session.add(EvidenceBlob(sha256=d, kind="collateral", data=b, created_at=v.verify_time))
        if session.get(EvidenceBlob, digest) is None:
            session.add(EvidenceBlob(sha256=digest, kind=kind, data=data, created_at=v.verify_time))
        session.add(Certificate(serial=serial, issued_at=v.verify_time, not_before=v.verify_time,
                                not_after=svc.clock.now() + timedelta(hours=24), subject="CN=test",
                                spki_sha256="0" * 64, evidence=[{"type": kind, "sha256": digest}],
                                policy_name=ref.policy.name, policy_version=ref.version,
                                policy_digest=ref.policy.digest, appraisal=result.to_json() | {"ear": ear},
                                der=der, status="valid"))
    return serial
