"""From a YAML file to an active policy and back over the API: apply, diff, dry run, activate,
rollback, retire (with revocation), each in the audit table and the transparency log."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from ca_service.db.models import Certificate, TlogEntry
from ca_service.evidence.sim.attester import default_measurement
from ca_service.services import tokens
from ca_service.tlog.leaves import decode_leaf
from tests.conftest import certificate_count

SIM_MRTD = default_measurement("mrtd").hex()
OTHER_MRTD = "11" * 48


def policy_yaml(name: str, mrtd: str, lifetime: str = "24h") -> str:
    return f"""
name: {name}
description: test policy
evidence:
  required: [sim]
  sim:
    tcb_status: [UpToDate]
    debug: false
    mrtd: ["{mrtd}"]
certificate:
  max_lifetime: {lifetime}
  key_types: [ec-p256]
  san: {{dns: ["*.cvm.local"]}}
  eku: [serverAuth, clientAuth]
"""


@pytest.fixture(scope="module")
def admin(services):
    t = tokens.create_token(services, role="admin", name="policy-admin", expires_in=None, actor="test")
    return {"Authorization": f"Bearer {t.secret}"}, f"token:{t.id}:policy-admin"


@pytest.fixture(scope="module")
def auditor(services):
    t = tokens.create_token(services, role="auditor", name="policy-auditor", expires_in=None, actor="test")
    return {"Authorization": f"Bearer {t.secret}"}


def _apply(client, headers, text, *, json_body=False, activate=False):
    url = "/v1/policies" + ("?activate=true" if activate else "")
    if json_body:
        import yaml

        return client.post(url, json=yaml.safe_load(text), headers=headers)
    return client.post(url, data=text, content_type="application/yaml", headers=headers)


def _log_leaves(services, since: int):
    with services.db.read() as session:
        rows = session.execute(select(TlogEntry).where(TlogEntry.idx >= since).order_by(TlogEntry.idx)).scalars()
        return [decode_leaf(r.leaf) for r in rows]


def _log_size(services) -> int:
    with services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(TlogEntry)) or 0)


def test_apply_is_content_addressed(client, admin):
    headers, _ = admin
    name = f"p-{uuid.uuid4().hex[:8]}"
    first = _apply(client, headers, policy_yaml(name, SIM_MRTD))
    assert first.status_code == 201, first.get_json()
    out = first.get_json()
    assert out["created"] is True and out["version"] == 1 and out["active"] is False
    again = _apply(client, headers, "# reformatted\n" + policy_yaml(name, SIM_MRTD.upper()))
    assert again.status_code == 200 and again.get_json()["version"] == 1 and again.get_json()["created"] is False
    as_json = _apply(client, headers, policy_yaml(name, SIM_MRTD), json_body=True)
    assert as_json.status_code == 200 and as_json.get_json()["digest"] == out["digest"]


def test_invalid_documents_are_refused_with_reasons(client, admin):
    headers, _ = admin
    resp = _apply(client, headers, policy_yaml("bad", SIM_MRTD).replace("debug: false", "debug: false\n    nope: 1"))
    assert resp.status_code == 422 and resp.get_json()["code"] == "policy.invalid"
    assert resp.get_json()["errors"][0]["path"] == "/evidence/sim"
    resp = client.post("/v1/policies", data="name: x", content_type="text/plain", headers=headers)
    assert resp.status_code == 415
    resp = _apply(client, headers, "{")
    assert resp.status_code == 422 and resp.get_json()["code"] == "policy.invalid"


def test_lifecycle(client, admin, auditor, issuer, services):
    headers, actor = admin
    name = f"life-{uuid.uuid4().hex[:8]}"
    log_start = _log_size(services)

    # v1: apply and activate at once; issue two certificates under it
    v1 = _apply(client, headers, policy_yaml(name, SIM_MRTD), activate=True).get_json()
    assert v1["active"] is True and v1["id"] == f"urn:ca-service:policy:{name}@1#sha256:{v1['digest']}"
    serials = []
    for _ in range(2):
        resp = issuer.issue(policy=name)
        assert resp.status_code == 201, resp.get_json()
        serials.append(resp.get_json()["serial"])

    # v2: another firmware; review it before activating
    v2 = _apply(client, headers, policy_yaml(name, OTHER_MRTD, "12h")).get_json()
    assert v2["version"] == 2 and v2["active"] is False
    diff = client.get(f"/v1/policies/{name}/diff?from=1&to=2", headers=auditor).get_json()
    assert {"path": "/evidence/sim/mrtd/-", "op": "removed", "before": SIM_MRTD} in diff["changes"]
    assert {"path": "/evidence/sim/mrtd/-", "op": "added", "after": OTHER_MRTD} in diff["changes"]
    assert {"path": "/certificate/max_lifetime", "op": "changed", "before": "24h", "after": "12h"} in diff["changes"]

    # dry run: both would now fail on mrtd, and nothing changes
    before = (certificate_count(services), _log_size(services))
    report = client.post(f"/v1/policies/{name}/dry-run", json={"version": 2}, headers=headers)
    assert report.status_code == 200, report.get_json()
    rep = report.get_json()
    assert rep["examined"] == 2 and rep["would_fail"] == 2 and rep["would_pass"] == 0 and rep["errors"] == 0
    assert {r["serial"] for r in rep["results"]} == set(serials)
    failed = rep["results"][0]["failed_checks"]
    assert failed == [{"evidence": "sim", "claim": "mrtd", "expected": [OTHER_MRTD], "actual": SIM_MRTD,
                       "passed": False}]
    assert (certificate_count(services), _log_size(services)) == before
    assert client.get(f"/v1/policies/{name}", headers=auditor).get_json()["active_version"] == 1
    # the current version still admits them; an unstored candidate document can be tried too
    same = client.post(f"/v1/policies/{name}/dry-run", json={"version": 1, "serials": serials},
                       headers=headers).get_json()
    assert same["would_pass"] == 2
    doc = client.post(f"/v1/policies/{name}/dry-run", json={"document": policy_yaml(name, OTHER_MRTD)},
                      headers=headers).get_json()
    assert doc["candidate"]["version"] is None and doc["would_fail"] == 2

    # activate v2: issuance is refused, naming claim, expected and actual
    assert client.post(f"/v1/policies/{name}/versions/2/activate", headers=headers).status_code == 200
    refused = issuer.issue(policy=name)
    assert refused.status_code == 403 and refused.get_json()["code"] == "appraisal.failed"
    fc = refused.get_json()["failed_checks"]
    assert fc == [{"evidence": "sim", "claim": "mrtd", "expected": [OTHER_MRTD], "actual": SIM_MRTD, "passed": False}]

    # rollback: activate v1 again
    assert client.post(f"/v1/policies/{name}/versions/1/activate", headers=headers).get_json()["active"] is True
    resp = issuer.issue(policy=name)
    assert resp.status_code == 201
    serials.append(resp.get_json()["serial"])

    # retire: never the active version; then v1 with revocation of what it admitted
    r = client.post(f"/v1/policies/{name}/versions/1/retire", json={"revoke": True}, headers=headers)
    assert r.status_code == 409 and r.get_json()["code"] == "policy.version_active"
    client.post(f"/v1/policies/{name}/versions/2/activate", headers=headers)
    r = client.post(f"/v1/policies/{name}/versions/1/retire", json={"revoke": True, "reason": "superseded"},
                    headers=headers)
    assert r.status_code == 200, r.get_json()
    assert sorted(r.get_json()["revoked"]) == sorted(serials)
    for s in serials:
        rec = client.get(f"/v1/certificates/{s}").get_json()
        assert rec["status"] == "revoked" and rec["revocation_reason"] == "superseded" and rec["revoked_at"]
    r = client.post(f"/v1/policies/{name}/versions/1/activate", headers=headers)
    assert r.status_code == 409 and r.get_json()["code"] == "policy.retired"
    r = client.post(f"/v1/policies/{name}/versions/1/retire", headers=headers)
    assert r.status_code == 409 and r.get_json()["code"] == "policy.retired"
    listing = client.get(f"/v1/policies/{name}", headers=auditor).get_json()
    assert listing["versions"][0]["retired_at"] and listing["active"]["version"] == 2

    # the transparency log holds every policy event and every revocation
    leaves = _log_leaves(services, log_start)
    policy_events = [(lf.body["action"], lf.body["policy"]["version"]) for lf in leaves
                     if lf.type == "policy" and lf.body["policy"]["name"] == name]
    assert policy_events == [("create", 1), ("activate", 1), ("create", 2), ("activate", 2), ("activate", 1),
                             ("activate", 2), ("retire", 1)]
    assert all(lf.body["actor"] == actor for lf in leaves if lf.type == "policy" and lf.body["policy"]["name"] == name)
    revoked_in_log = {lf.body["serial"] for lf in leaves if lf.type == "revocation"}
    assert set(serials) <= revoked_in_log

    # and the audit table: who, what, when, before/after digests
    events = client.get(f"/v1/audit?target={name}@1", headers=auditor).get_json()["events"]
    actions = [e["action"] for e in events]
    assert actions[0] == "policy.retire" and "policy.apply" in actions and "policy.activate" in actions
    retire_ev = events[0]
    assert retire_ev["actor"] == actor and retire_ev["before"] == v1["digest"] and retire_ev["after"] is None
    assert retire_ev["detail"]["revoked"] == 3
    act2 = client.get(f"/v1/audit?target={name}@2&action=policy.activate", headers=auditor).get_json()["events"]
    assert act2[0]["before"] == v1["digest"] and act2[0]["after"] == v2["digest"]
    dry = client.get("/v1/audit?action=policy.dry_run", headers=auditor).get_json()["events"]
    assert any(e["target"] == f"{name}@2" and e["detail"]["would_fail"] == 2 for e in dry)


def test_retire_without_revoke_keeps_certificates(client, admin, issuer, services):
    headers, _ = admin
    name = f"keep-{uuid.uuid4().hex[:8]}"
    _apply(client, headers, policy_yaml(name, SIM_MRTD), activate=True)
    serial = issuer.issue(policy=name).get_json()["serial"]
    _apply(client, headers, policy_yaml(name, OTHER_MRTD), activate=True)
    r = client.post(f"/v1/policies/{name}/versions/1/retire", headers=headers)
    assert r.status_code == 200 and r.get_json()["revoked"] == []
    with services.db.read() as session:
        assert session.get(Certificate, serial).status == "valid"


def test_reads(client, auditor):
    lst = client.get("/v1/policies", headers=auditor).get_json()["policies"]
    sim = next(p for p in lst if p["name"] == "sim")
    assert sim["active_version"] == 1 and sim["versions"][0]["active"] is True
    one = client.get("/v1/policies/sim/versions/1", headers=auditor).get_json()
    assert one["document"]["evidence"]["required"] == ["sim"]
    assert client.get("/v1/policies/nope", headers=auditor).get_json()["code"] == "policy.not_found"
    assert client.get("/v1/policies/sim/diff", headers=auditor).status_code == 400
    page = client.get("/v1/audit?limit=1", headers=auditor).get_json()
    assert len(page["events"]) == 1
    if page["next_before_id"] is not None:
        nxt = client.get(f"/v1/audit?limit=1&before_id={page['next_before_id']}", headers=auditor).get_json()
        assert nxt["events"][0]["id"] < page["events"][0]["id"]


def test_dry_run_refusals(client, admin):
    headers, _ = admin
    r = client.post("/v1/policies/sim/dry-run", json={"version": 1, "document": "x"}, headers=headers)
    assert r.status_code == 400
    r = client.post("/v1/policies/sim/dry-run", json={"document": policy_yaml("other", SIM_MRTD)}, headers=headers)
    assert r.status_code == 400
    r = client.post("/v1/policies/sim/dry-run", json={"limit": 0}, headers=headers)
    assert r.status_code == 422
    r = client.post("/v1/policies/nope/dry-run", json={}, headers=headers)
    assert r.status_code == 404
    assert json.loads(r.get_data())["code"] == "policy.not_found"
