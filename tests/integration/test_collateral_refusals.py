"""Import refusals, one specific error each: rollback of the TCB evaluation data number, a tampered
item (signed bytes, issuer chain, CRL), an item filed under another resource's URL, an unknown host.
An import is all or nothing."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import pytest
from sqlalchemy import func, select

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import Kind
from ca_service.collateral.errors import RollbackRefused
from ca_service.collateral.store import select_at
from ca_service.db.models.collateral import CollateralItem
from ca_service.errors import CAServiceError
from ca_service.services import collateral as cs
from tests.collateral.fixtures import bundle_bytes, bundle_entries, fresh_services  # noqa: F401

FMSPC = "90C06F000000"  # eval 17 (2025-06) and eval 18 (2026-02) in the vectors
TCB_URL = endpoints.tcb_info("tdx", bytes.fromhex(FMSPC)).url


def _eval(e: dict[str, Any]) -> int:
    return json.loads(base64.b64decode(e["body_b64"]))["tcbInfo"]["tcbEvaluationDataNumber"]


def _bundle(*entries: dict[str, Any]) -> bytes:
    return json.dumps(list(entries)).encode()


def _count(svc) -> int:
    with svc.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(CollateralItem)) or 0)


@pytest.fixture
def svc(tmp_path_factory, db_url_factory):
    s = fresh_services(tmp_path_factory, db_url_factory)
    yield s
    s.close()


def _code(svc, data: bytes) -> tuple[str, dict[str, Any]]:
    with pytest.raises(CAServiceError) as ei:
        cs.import_bundle(svc, data)
    return ei.value.code, ei.value.fields


def test_rollback_to_an_older_tcb_evaluation_number_is_refused(svc, bundle_entries):
    tcbs = [e for e in bundle_entries if e["url"] == TCB_URL]
    old = [e for e in tcbs if _eval(e) == 17]
    new = [e for e in tcbs if _eval(e) == 18]
    assert old and new
    cs.import_bundle(svc, _bundle(*new))
    with pytest.raises(RollbackRefused) as ei:
        cs.import_bundle(svc, _bundle(old[0]))
    assert ei.value.code == "collateral.rollback_refused"
    assert ei.value.fields["cached"] == 18 and ei.value.fields["offered"] == 17
    with svc.db.read() as session:  # the newer is kept, the older never entered
        assert {r.tcb_evaluation_data_number for r in session.scalars(select(CollateralItem))} == {18}
        row = select_at(session, Kind.TDX_TCB_INFO, FMSPC.lower(), datetime(2026, 3, 1, tzinfo=UTC))
        assert row is not None and row.tcb_evaluation_data_number == 18


def test_selection_never_falls_back_to_superseded_tcb_data(svc, bundle_entries):
    """In history order both are accepted; as of a time after the eval-18 issue, the eval-17 item is
    never chosen, even once eval 18 has expired (the verifier then says expired)."""
    tcbs = sorted([e for e in bundle_entries if e["url"] == TCB_URL], key=lambda e: e["fetched_at"])
    cs.import_bundle(svc, _bundle(*tcbs))
    with svc.db.read() as session:
        assert select_at(session, Kind.TDX_TCB_INFO, FMSPC.lower(),
                         datetime(2025, 6, 24, tzinfo=UTC)).tcb_evaluation_data_number == 17
        assert select_at(session, Kind.TDX_TCB_INFO, FMSPC.lower(),
                         datetime(2027, 1, 1, tzinfo=UTC)).tcb_evaluation_data_number == 18


def _mutate_body(e: dict[str, Any], fn) -> dict[str, Any]:
    e = copy.deepcopy(e)
    e["body_b64"] = base64.b64encode(fn(base64.b64decode(e["body_b64"]))).decode()
    return e


def _first(entries, url_part: str) -> dict[str, Any]:
    return next(e for e in entries if url_part in e["url"])


TAMPER = {
    # one byte of the signed tcbInfo (a TCB level's status)
    "tcb_info_signed_byte": ("/tcb?", lambda b: b.replace(b'"UpToDate"', b'"UpToDatf"', 1),
                             "evidence.collateral_invalid"),
    "tcb_info_signature": ("/tcb?", lambda b: b[:-4] + (b"0" if b[-4:-3] != b"0" else b"1") + b[-3:],
                           "evidence.collateral_invalid"),
    "qe_identity_signed_byte": ("/qe/identity", lambda b: b.replace(b'"TD_QE"', b'"TD_QF"', 1),
                                "evidence.collateral_invalid"),
    "pck_crl_byte": ("pckcrl", lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "evidence.collateral_invalid"),
    "root_crl_byte": ("IntelSGXRootCA", lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:],
                      "evidence.collateral_invalid"),
    "amd_crl_byte": ("/vcek/v1/Milan/crl", lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:],
                     "evidence.collateral_invalid"),
    "vcek_byte": ("ucodeSPL", lambda b: b[:300] + bytes([b[300] ^ 1]) + b[301:], None),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampered_item_is_refused_and_nothing_is_imported(svc, bundle_entries, name):
    part, fn, code = TAMPER[name]
    target = _first(bundle_entries, part)
    bad = [(_mutate_body(e, fn) if e is target else e) for e in bundle_entries]
    got, fields = _code(svc, _bundle(*bad))
    if code is not None:
        assert got == code
    else:
        assert got.startswith("evidence.")
    assert fields["url"] == endpoints.parse_url(target["url"]).url
    assert _count(svc) == 0  # all or nothing


def test_issuer_chain_not_to_the_pinned_root_is_refused(svc, bundle_entries):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    e = copy.deepcopy(_first(bundle_entries, "/tcb?"))
    pem = unquote(e["headers"]["TCB-Info-Issuer-Chain"])
    certs = x509.load_pem_x509_certificates(pem.encode())
    # a look-alike root: same name, another key (what an attacker serving collateral could make)
    key = ec.generate_private_key(ec.SECP256R1())
    fake = (x509.CertificateBuilder().subject_name(certs[-1].subject).issuer_name(certs[-1].subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(certs[-1].not_valid_before_utc)
            .not_valid_after(certs[-1].not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    new_pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs[:-1]) + fake.public_bytes(Encoding.PEM).decode()
    e["headers"]["TCB-Info-Issuer-Chain"] = quote(new_pem, safe="")
    assert _code(svc, _bundle(e))[0] == "evidence.root_untrusted"
    e["headers"] = {}
    assert _code(svc, _bundle(e))[0] == "evidence.collateral_invalid"


def test_item_under_another_resources_url_is_refused(svc, bundle_entries):
    e = copy.deepcopy(_first(bundle_entries, "/tcb?fmspc=B0C06F000000"))
    e["url"] = endpoints.tcb_info("tdx", bytes.fromhex("00806F050000")).url  # signed for B0C06F000000
    assert _code(svc, _bundle(e))[0] == "evidence.collateral_mismatch"
    e["url"] = endpoints.tcb_info("sgx", bytes.fromhex("B0C06F000000")).url  # a TDX TCB Info as SGX
    assert _code(svc, _bundle(e))[0] == "evidence.collateral_mismatch"
    qe = copy.deepcopy(_first(bundle_entries, "tdx/certification/v4/qe/identity"))
    qe["url"] = endpoints.qe_identity("sgx").url
    assert _code(svc, _bundle(qe))[0] == "evidence.collateral_mismatch"
    vcek = copy.deepcopy(_first(bundle_entries, "ucodeSPL"))
    chain = _first(bundle_entries, "/vcek/v1/Milan/cert_chain")
    vcek["url"] = vcek["url"].replace("ucodeSPL=", "ucodeSPL=1")  # another TCB
    assert _code(svc, _bundle(chain, vcek))[0] == "evidence.collateral_mismatch"
    assert _count(svc) == 0


def test_unknown_host_and_non_200_are_refused(svc, bundle_entries):
    e = copy.deepcopy(_first(bundle_entries, "/tcb?"))
    e["url"] = e["url"].replace("api.trustedservices.intel.com", "pccs.attacker.example")
    good = _first(bundle_entries, "IntelSGXRootCA")
    assert _code(svc, _bundle(good, e))[0] == "collateral.host_not_allowed"
    e = copy.deepcopy(good)
    e["status"] = 404
    assert _code(svc, _bundle(e))[0] == "collateral.fetch_failed"
    assert _count(svc) == 0


def test_vcek_without_its_chain_is_refused(svc, bundle_entries):
    assert _code(svc, _bundle(_first(bundle_entries, "ucodeSPL")))[0] == "evidence.collateral_invalid"
