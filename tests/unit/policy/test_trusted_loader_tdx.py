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
