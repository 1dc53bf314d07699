"""The offline bundle built from the real vectors, imported into an empty cache: collateral_for then
yields collateral that makes every TDX/SGX/SNP vector verify at its verify_time exactly as with the
vector's own collateral; issuance supplies it when an evidence item comes without any."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from ca_service.clock import FixedClock
from ca_service.errors import CollateralMissing
from ca_service.services import collateral as cs
from ca_service.services.issuance import EvidenceItem, verify_items
from tests.collateral.fixtures import bundle_bytes, bundle_entries, empty_services, fresh_services, outcome  # noqa: F401
from tests.vectors.manifest import Vector, load_manifest

INTEL = [v for v in load_manifest() if v.tee in ("tdx", "sgx")]
SNP = [v for v in load_manifest() if v.tee == "snp"]
# Vectors collateral_for cannot serve, and why.
SNP_SKIP = {"snp/milan-aws-vlek": "AMD KDS publishes no VLEK certificates: the VLEK must come with the evidence"}


def _intel_id(v: Vector) -> str:
    return f"{v.path}:{v.files['collateral'].split('/')[0]}"


@pytest.fixture(scope="module")
def svc(empty_services, bundle_bytes):
    result = cs.import_bundle(empty_services, bundle_bytes)
    assert result.added and not result.already_cached
    return empty_services


@pytest.mark.parametrize("v", INTEL, ids=_intel_id)
def test_intel_vectors_verify_as_with_their_own_collateral(svc, v: Vector):
    kind, quote = f"{v.tee}-quote", v.read("quote")
    supplied = cs.collateral_for(svc, kind, quote, v.verify_time)
    assert len(supplied) == 1 and json.loads(supplied[0])["tcb_info"]
    assert outcome(kind, quote, supplied, v.verify_time) == outcome(kind, quote, [v.read("collateral")], v.verify_time)


def _snp_own(v: Vector) -> list[bytes]:
    return [v.read(r) for r in ("vek", "cert_chain", "crl") if r in v.files]


@pytest.mark.parametrize("v", [v for v in SNP if v.path not in SNP_SKIP], ids=lambda v: v.path)
def test_snp_vectors_verify_as_with_their_own_collateral(svc, v: Vector):
    report = v.read("report")
    supplied = cs.collateral_for(svc, "snp-report", report, v.verify_time)
    assert len(supplied) == 3  # VCEK, ASK+ARK, CRL: a CRL is always supplied (never "revocation not checked")
    assert outcome("snp-report", report, supplied, v.verify_time) == \
        outcome("snp-report", report, _snp_own(v), v.verify_time)


@pytest.mark.parametrize("path", sorted(SNP_SKIP))
def test_snp_skips_are_refused_clearly(svc, path):
    v = next(v for v in SNP if v.path == path)
    with pytest.raises(CollateralMissing):
        cs.collateral_for(svc, "snp-report", v.read("report"), v.verify_time)


def test_import_is_idempotent(svc, bundle_bytes):
    again = cs.import_bundle(svc, bundle_bytes)
    assert not again.added and len(again.already_cached) == len(json.loads(bundle_bytes))


def test_offline_miss_is_collateral_missing(tmp_path_factory, db_url_factory):
    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        v = INTEL[0]
        with pytest.raises(CollateralMissing) as ei:
            cs.collateral_for(svc, "tdx-quote", v.read("quote"), v.verify_time)
        assert "no collateral fetcher" in ei.value.detail
        assert ei.value.fields["url"].startswith("https://api.trustedservices.intel.com/tdx/certification/v4/tcb?")
    finally:
        svc.close()


def test_verify_items_supplies_collateral_when_none_is_sent(svc):
    v = next(v for v in INTEL if v.expected["verify_ok"])
    [ve] = verify_items(svc, (EvidenceItem("tdx-quote", v.read("quote")),), v.verify_time)
    assert ve.tcb_status == v.expected["tcb_status"]
    # sent collateral still wins: the agent's own (here: the vector's) is used as given
    [own] = verify_items(svc, (EvidenceItem("tdx-quote", v.read("quote"), (v.read("collateral"),)),), v.verify_time)
    assert own.tcb_status == ve.tcb_status
    # and the supplied collateral is kept for policy dry runs, by the digest the EAR names
    from ca_service.db.models import EvidenceBlob

    with svc.db.read() as session:
        assert session.get(EvidenceBlob, ve.collateral_sha256["intel.collateral"]) is not None


def test_issuance_api_uses_supplied_collateral(svc):
    """POST /v1/certificates with a real quote and no collateral, the clock at the vector's
    verify_time: verification passes with cached collateral, so the refusal is the binding (the
    vector was not made for our challenge), not missing collateral."""
    from ca_service.api.app import create_app
    from ca_service.services.container import Services

    v = next(v for v in INTEL if v.expected["verify_ok"] and v.tee == "tdx")
    at_svc = Services(settings=svc.settings, db=svc.db, clock=FixedClock(v.verify_time), keys=svc.keys)
    client = create_app(services=at_svc).test_client()
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.agent.client import make_csr

    ch = client.post("/v1/challenges").get_json()
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), ("a.cvm.local",)).public_bytes(Encoding.PEM).decode()
    body = {"challenge_id": ch["id"], "csr": csr, "policy": "sim",
            "evidence": [{"type": "tdx-quote", "data": base64.b64encode(v.read("quote")).decode()}]}
    resp = client.post("/v1/certificates", json=body)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["code"] == "binding.mismatch"
    # a day after the collateral window: the cache has nothing valid, the refusal says so
    late = Services(settings=svc.settings, db=svc.db, clock=FixedClock(
        v.verify_time + timedelta(days=400)), keys=svc.keys)
    client = create_app(services=late).test_client()
    ch = client.post("/v1/challenges").get_json()
    body["challenge_id"] = ch["id"]
    resp = client.post("/v1/certificates", json=body)
    assert resp.get_json()["code"] in ("evidence.collateral_expired", "evidence.certificate_expired")
