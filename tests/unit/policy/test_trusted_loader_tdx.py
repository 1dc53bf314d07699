"""policies/trusted-loader-tdx.yaml against the claims of the real event-log vectors (verified as of
their time, the log replayed against the quote): each check's outcome, item by item."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca_service.evidence import verify
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy
from tests.vectors.manifest import Vector, vectors_dir, vectors_for

POLICY = load_policy((Path(__file__).resolve().parents[3] / "policies" / "trusted-loader-tdx.yaml").read_text())
V = {v.path: v for v in vectors_for("tdx-eventlog")}
BOOT = {"mrtd", "rtmr0", "rtmr1", "rtmr2"}


def _verified(v: Vector, with_log: bool = True):
    dcap = v.expected["dcap"][0]
    coll = v.dir / dcap["collateral"] if "collateral" in dcap else vectors_dir() / dcap["collateral_ref"]
    log = v.read("ccel" if "ccel" in v.files else "event_log_json") if with_log else None
    return verify("tdx-quote", v.read("quote"), collateral=[v.read("pck_cert_chain"), coll.read_bytes()],
                  at=v.verify_time, event_log=log)


# vector -> the claims that fail (exactly); every other check of the policy passes on real claims
EXPECTED = {
    # the TD the policy pins: genuine, up to date, its boot chain replayed; but no ca-service loader ran
    "tdx-eventlog/nearmpc-dstack-json": {"loader_digests"},
    # another dstack image (other firmware, kernel, command line)
    "tdx-eventlog/dstack-verifier-json": BOOT | {"loader_digests"},
    # a GCE Container-Optimized OS TD
    "tdx-eventlog/gce-cos113-ccel": BOOT | {"loader_digests"},
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_real_claims_item_by_item(path: str):
    result = appraise(POLICY, [_verified(V[path])], insecure_allowed=False)
    assert not result.passed
    assert {c.claim for c in result.failed} == EXPECTED[path]
    checks = {c.claim: c for c in result.checks}
    assert checks["loader_digests"].actual == []  # the log replayed: the TD measured no loader
    assert {"tcb_status", "advisories", "debug", "min_tcb_evaluation_data_number"} <= {
        c.claim for c in result.checks if c.passed}


def test_without_the_event_log_loader_digests_are_unknown():
    result = appraise(POLICY, [_verified(V["tdx-eventlog/nearmpc-dstack-json"], with_log=False)],
                      insecure_allowed=False)
    check = next(c for c in result.checks if c.claim == "loader_digests")
    assert check.passed is False and check.actual is None


def test_pins_are_the_replayed_boot_chain_of_the_real_td():
    ve = _verified(V["tdx-eventlog/nearmpc-dstack-json"])
    rules = POLICY.rules("tdx-quote")
    assert rules["mrtd"] == [ve.claims["mrtd"]]
    assert {int(k): v for k, v in rules["rtmr"].items()} == {i: [ve.claims[f"rtmr{i}"]] for i in range(3)}


DSTACK = load_policy((Path(__file__).resolve().parents[3] / "policies" / "dstack-app-tdx.yaml").read_text())
RUNTIME = {"runtime_event:compose-hash", "runtime_event:mpc-image-digest"}


def test_dstack_app_policy_admits_the_real_dstack_td():
    result = appraise(DSTACK, [_verified(V["tdx-eventlog/nearmpc-dstack-json"])], insecure_allowed=False)
    assert result.passed, [c.to_json() for c in result.failed]
    checks = {c.claim: c for c in result.checks}
    assert checks["runtime_event:compose-hash"].actual == [
        "2911e1f733466216dedb862d6d669e11256ee7a34ce4dbc66c4b807ba7a9c895"]


def test_dstack_app_policy_refuses_another_app_and_a_missing_log():
    other = appraise(DSTACK, [_verified(V["tdx-eventlog/dstack-verifier-json"])], insecure_allowed=False)
    assert {c.claim for c in other.failed} == BOOT | RUNTIME
    checks = {c.claim: c for c in other.checks}
    assert checks["runtime_event:mpc-image-digest"].actual == []  # that app never measured one
    assert checks["runtime_event:compose-hash"].actual == [
        "3763bc34552cf3a27ff71ad5f7a90471562a1a2df552dfc1998cba2d60da27e7"]
    no_log = appraise(DSTACK, [_verified(V["tdx-eventlog/nearmpc-dstack-json"], with_log=False)],
                      insecure_allowed=False)
    assert {c.claim for c in no_log.failed} == RUNTIME
    assert all(c.actual is None for c in no_log.failed)


def test_every_occurrence_of_a_pinned_event_must_match():
    from dataclasses import replace

    ve = _verified(V["tdx-eventlog/nearmpc-dstack-json"])
    twice = [*ve.claims["runtime_events"], {"name": "compose-hash", "payload": "00" * 32}]
    result = appraise(DSTACK, [replace(ve, claims={**ve.claims, "runtime_events": twice})], insecure_allowed=False)
    assert [c.claim for c in result.failed] == ["runtime_event:compose-hash"]


def test_the_agent_is_told_both_policies_need_the_event_log():
    from ca_service.policy.appraise import evidence_needs

    for policy in (POLICY, DSTACK):
        assert evidence_needs(policy) == {"required": ["tdx-quote"], "items": {"tdx-quote": {"event_log": True}}}


@pytest.mark.parametrize("bad", ["{}", "{compose-hash: []}", "{compose-hash: [ABCD]}", "{compose-hash: [abc]}",
                                 "[compose-hash]"])
def test_runtime_events_rule_is_validated(bad: str):
    from ca_service.errors import PolicyError

    doc = (Path(__file__).resolve().parents[3] / "policies" / "dstack-app-tdx.yaml").read_text()
    start = doc.index("    runtime_events:")
    end = doc.index("certificate:")
    with pytest.raises(PolicyError):
        load_policy(doc[:start] + f"    runtime_events: {bad}\n" + doc[end:])


def test_a_relabelled_runtime_event_cannot_hide_an_occurrence():
    """Event types are not measured: relabelling a runtime event (here the last compose-hash's type
    to EV_IPL) keeps the replay matching but hides it from runtime_events. The pins then cannot hold."""
    import json

    v = V["tdx-eventlog/nearmpc-dstack-json"]
    log = json.loads(v.read("event_log_json"))
    target = max(i for i, e in enumerate(log) if e["imr"] == 3 and e["event"] == "compose-hash")
    log[target]["event_type"] = 0x0D
    dcap = v.expected["dcap"][0]
    coll = v.dir / dcap["collateral"] if "collateral" in dcap else vectors_dir() / dcap["collateral_ref"]
    ve = verify("tdx-quote", v.read("quote"), collateral=[v.read("pck_cert_chain"), coll.read_bytes()],
                at=v.verify_time, event_log=json.dumps(log).encode())
    assert ve.claims["rtmr3_unverified_events"] == 1  # the replay matched: nothing refused it
    assert "compose-hash" not in [e["name"] for e in ve.claims["runtime_events"]]
    result = appraise(DSTACK, [ve], insecure_allowed=False)
    assert {c.claim for c in result.failed} == RUNTIME
    assert all(c.actual["rtmr3_unverified_events"] == 1 for c in result.failed)
    honest = _verified(v)
    assert honest.claims["rtmr3_unverified_events"] == 0
    assert appraise(DSTACK, [honest], insecure_allowed=False).passed
