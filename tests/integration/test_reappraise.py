"""``ca-service reappraise --dry-run`` on real vectors with collateral from two dates: certificates
recorded for two TDX quotes judged by the 2025-06 collateral, the CA's cache then given the 2025-10
collateral; the dry run re-verifies the stored evidence under the original policy version and lists
before/after. Real data has no status change between those dates; past the collateral's window the
dry run reports the refusal, never a pass."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from ca_service.cli.main import cli
from ca_service.services import collateral as cs
from ca_service.services import policies
from ca_service.services.reappraisal import reappraise
from tests.collateral.fixtures import fresh_services
from tests.collateral.make_bundle import intel_entries
from tests.collateral.recorded import record, vector

POLICY = """
name: tdx-fleet
description: TDX CVMs, up to date or not (the fleet tolerates OutOfDate while it patches)
evidence:
  required: [tdx-quote]
  tdx-quote:
    tcb_status: [UpToDate, OutOfDate]
    debug: false
certificate:
  max_lifetime: 24h
"""
QUOTES = ("tdx/gcp-c3-v4-uptodate", "tdx/automata-v4-outofdate")


def _v(path, date):
    return vector(path, date)


def _record(svc, ref, v) -> str:
    return record(svc, ref, v)


@pytest.fixture(scope="module")
def ca(tmp_path_factory, db_url_factory):
    svc = fresh_services(tmp_path_factory, db_url_factory)
    ref, _ = policies.apply_policy(svc, POLICY, actor="test")
    policies.activate(svc, "tdx-fleet", ref.version, actor="test")
    june = [e for p in QUOTES for e in intel_entries(_v(p, "collateral-2025-06").dir / "collateral-2025-06")]
    cs.import_bundle(svc, json.dumps(june).encode())
    serials = {p: _record(svc, ref, _v(p, "collateral-2025-06")) for p in QUOTES}
    october = [e for p in QUOTES for e in intel_entries(_v(p, "collateral-2025-10").dir / "collateral-2025-10")]
    cs.import_bundle(svc, json.dumps(october).encode())
    yield svc, serials
    svc.close()


def test_dry_run_on_real_vectors_lists_before_and_after(ca, monkeypatch):
    svc, serials = ca
    at = _v(QUOTES[0], "collateral-2025-10").verify_time
    results = {r.serial: r for r in reappraise(svc, at=at)}
    assert set(results) == set(serials.values())
    up, out = results[serials[QUOTES[0]]], results[serials[QUOTES[1]]]
    assert (up.before, up.after, up.changed, up.reasons) == ("affirming", "affirming", False, ())
    assert (out.before, out.after, out.changed, out.reasons) == ("warning", "warning", False, ())
    # through the CLI, as an operator runs it
    monkeypatch.setenv("CA_SERVICE_HOME", str(svc.settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", svc.settings.database_url)
    res = CliRunner().invoke(cli, ["reappraise", "--dry-run", "--at", at.isoformat()], catch_exceptions=False)
    assert res.exit_code == 0 and "2 certificate(s) re-appraised, 0 would change" in res.output
    assert f"{serials[QUOTES[1]]}\ttdx-fleet\twarning -> warning\tsame" in res.output
    listed = json.loads(CliRunner().invoke(cli, ["reappraise", "--dry-run", "--at", at.isoformat(), "--json"]).output)
    assert {r["serial"] for r in listed} == set(serials.values())


def test_past_the_collateral_window_the_dry_run_reports_the_refusal(ca):
    svc, serials = ca
    results = reappraise(svc, at=_v(QUOTES[0], "collateral-2025-10").verify_time + timedelta(days=60))
    assert len(results) == 2
    for r in results:
        assert r.after == "refused" and r.changed
        assert r.reasons[0].startswith("refused [evidence.collateral_expired]")


def test_only_certificates_judged_against_the_changed_resource(ca):
    svc, serials = ca
    at = _v(QUOTES[0], "collateral-2025-10").verify_time
    assert {r.serial for r in reappraise(svc, at=at, changed={("intel.tcb_info.tdx", "00806f050000")})} == \
        set(serials.values())
    assert reappraise(svc, at=at, changed={("intel.tcb_info.tdx", "90c06f000000")}) == []
    assert reappraise(svc, at=at, changed={("amd.vcek_crl", "Milan")}) == []


@pytest.mark.parametrize("action", ["revoke", "warn", "ignore"])
def test_on_collateral_update_revoke_warn_ignore(tmp_path_factory, db_url_factory, monkeypatch, action):
    """Judged past its collateral's window, each certificate is worse (refused): revoked (CRL says so),
    flagged (GET /v1/certificates/{serial}, a log leaf) or left, as its policy version says; a
    certificate under another policy with ``ignore`` is left in every case."""
    from cryptography import x509

    from ca_service.api.app import create_app
    from ca_service.tlog.leaves import decode_leaf

    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        doc = POLICY + f"collateral:\n  on_collateral_update: {action}\n"
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        other, _ = policies.apply_policy(svc, POLICY.replace("tdx-fleet", "tdx-other")
                                         + "collateral:\n  on_collateral_update: ignore\n", actor="test")
        v = _v(QUOTES[0], "collateral-2025-06")
        cs.import_bundle(svc, json.dumps(intel_entries(v.dir / "collateral-2025-06")).encode())
        target, bystander = _record(svc, ref, v), _record(svc, other, v)
        monkeypatch.setenv("CA_SERVICE_HOME", str(svc.settings.home))
        monkeypatch.setenv("CA_SERVICE_DATABASE_URL", svc.settings.database_url)
        res = CliRunner().invoke(cli, ["reappraise", "--at", "2025-09-01T00:00:00Z", "--json"],
                                 catch_exceptions=False)
        out = json.loads(res.output)
        assert {(a["serial"], a["action"]) for a in out["actions"]} == {(target, action), (bystander, "ignore")}
        client = create_app(services=svc).test_client()
        got = {s: client.get(f"/v1/certificates/{s}").get_json() for s in (target, bystander)}
        assert got[bystander]["status"] == "valid" and "reappraisal" not in got[bystander]["appraisal"]
        crl = x509.load_der_x509_crl(client.get("/v1/ca/crl").data)
        revoked = {format(e.serial_number, "x") for e in crl}
        if action == "revoke":
            assert got[target]["status"] == "revoked" and target in revoked
        else:
            assert got[target]["status"] == "valid" and target not in revoked
        if action == "warn":
            flag = got[target]["appraisal"]["reappraisal"]
            assert (flag["before"], flag["after"]) == ("affirming", "refused")
            assert flag["reasons"][0].startswith("refused [evidence.collateral_expired]")
        from sqlalchemy import select

        from ca_service.db.models.tlog import TlogEntry

        with svc.db.read() as session:
            leaves = [decode_leaf(e.leaf) for e in session.scalars(select(TlogEntry))]
        kinds = [(lf.type, lf.body.get("serial")) for lf in leaves if lf.body.get("serial") in (target, bystander)]
        expected = {"revoke": [("revocation", target)], "warn": [("reappraisal", target)], "ignore": []}[action]
        assert kinds == expected
    finally:
        svc.close()
