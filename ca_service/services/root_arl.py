"""The root's ARL (RFC 5280 section 5.2.5): signed at ``init`` and by the offline root command
(``ca-service root sign-arl``), stored, and served at ``GET /v1/ca/root.crl`` (the issuing CA's CRL
distribution point), so a relying party's ``openssl verify -crl_check_all`` checks the issuing CA too.

Each new ARL carries every entry of the previous one (a CA revocation is final) plus the new ones,
and a higher CRL number.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca_service.ca.revocation import ARL_LIFETIME, REASONS, RevokedEntry, build_arl
from ca_service.db.models import CARevocationList
from ca_service.errors import NotFound, SchemaViolation
from ca_service.services import audit
from ca_service.services.container import Services


def _latest(session: Session) -> CARevocationList | None:
    return session.scalars(select(CARevocationList).where(CARevocationList.issuer_role == "root")
                           .order_by(CARevocationList.number.desc()).limit(1)).first()


def _entries(row: CARevocationList | None) -> list[RevokedEntry]:
    if row is None:
        return []
    out = []
    for rc in x509.load_der_x509_crl(row.der):
        try:
            reason: str | None = {v: k for k, v in REASONS.items()}.get(
                rc.extensions.get_extension_for_class(x509.CRLReason).value.reason)
        except x509.ExtensionNotFound:
            reason = None
        out.append(RevokedEntry(rc.serial_number, rc.revocation_date_utc, reason))
    return out


def sign_arl_in(session: Session, *, root_key: Any, root: x509.Certificate, now: datetime,
                revoke: tuple[tuple[int, str], ...] = (), lifetime: timedelta = ARL_LIFETIME) -> CARevocationList:
    """Sign and store a new ARL inside the caller's transaction.

    Raises:
        SchemaViolation (``request.schema``): the key is not the root's, or an unknown reason.
    """
    if root_key.public_key() != root.public_key():
        raise SchemaViolation("this key is not the root CA's key", field="key")
    previous = _latest(session)
    entries = _entries(previous)
    known = {e.serial for e in entries}
    for serial, reason in revoke:
        if reason not in REASONS:
            raise SchemaViolation(f"reason must be one of {', '.join(REASONS)}", field="reason")
        if serial not in known:
            entries.append(RevokedEntry(serial, now, reason))
            known.add(serial)
    number = max(int(now.timestamp() * 1000), (previous.number + 1) if previous else 0)
    crl = build_arl(entries, root_key=root_key, root=root, now=now, number=number, lifetime=lifetime)
    row = CARevocationList(number=number, issuer_role="root", this_update=crl.last_update_utc,
                           next_update=crl.next_update_utc or now + lifetime, der=crl.public_bytes(Encoding.DER),
                           created_at=now)
    session.add(row)
    session.flush()
    return row


def sign_arl(svc: Services, *, root_key: Any, revoke: tuple[tuple[int, str], ...] = (),
             lifetime: timedelta = ARL_LIFETIME, actor: str = "cli") -> CARevocationList:
    """The offline root command: a new ARL signed with the root key the operator brought."""
    now = svc.clock.now()
    root = svc.keys.certificate("root")
    with svc.db.transaction() as session:
        row = sign_arl_in(session, root_key=root_key, root=root, now=now,
                          revoke=revoke, lifetime=lifetime)
        audit.record(session, at=now, actor=actor, action="root.sign_arl", target=str(row.number),
                     detail={"revoked": [format(s, "x") for s, _ in revoke],
                             "next_update": row.next_update.isoformat()})
        return row


def current_arl(svc: Services) -> bytes:
    """The newest ARL (DER).

    Raises:
        NotFound (``request.not_found``): none signed yet (a CA initialised before ARLs existed:
            run ``ca-service root sign-arl``).
    """
    with svc.db.read() as session:
        row = _latest(session)
        if row is None:
            raise NotFound("the root has not signed an ARL yet: run `ca-service root sign-arl` with the root key")
        return bytes(row.der)
