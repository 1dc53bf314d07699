"""`require_checks`: a policy can require a check that verification may skip (issue 11 section 3)."""

from __future__ import annotations

import pytest

from ca_service.errors import PolicyError
from ca_service.evidence import verify
from ca_service.evidence.base import Check
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy
from tests.vectors.manifest import vectors_for

V = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")


def _policy(rule: str) -> str:
    return (f"name: gpu\nevidence:\n  required: [nvidia-gpu]\n  nvidia-gpu:\n    {rule}\n"
            "certificate:\n  max_lifetime: 1h\n")


def _gpu(with_rims: bool):
    coll = [V.read("cert_chain")] + ([(V.dir / n).read_bytes() for n in V.files["rims_test_no_gpu"]]
                                     if with_rims else [])
    return verify("nvidia-gpu", V.read("report"), collateral=coll, at=V.verify_time)


def test_skipped_check_fails_a_policy_that_requires_it():
    policy = load_policy(_policy("require_checks: [nvidia.rim.vbios, nvidia.signature, nvidia.no_such_check]"))
    without = appraise(policy, [_gpu(False)], insecure_allowed=False)
    assert not without.passed
    failed = {c.claim: c.actual for c in without.failed}
    assert failed == {"check:nvidia.rim.vbios": "skipped", "check:nvidia.no_such_check": "absent"}
    with_rims = appraise(policy, [_gpu(True)], insecure_allowed=False)
    assert {c.claim for c in with_rims.failed} == {"check:nvidia.no_such_check"}


def test_required_skipped_check_reports_skipped():
    policy = load_policy(_policy("require_checks: [nvidia.ocsp]"))
    result = appraise(policy, [_gpu(True)], insecure_allowed=False)
    assert [(c.claim, c.actual, c.passed) for c in result.checks if c.claim.startswith("check:")] == [
        ("check:nvidia.ocsp", "skipped", False)]


def test_a_failed_check_never_appraises_as_verified():
    from dataclasses import replace

    ve = _gpu(False)
    tampered = replace(ve, checks=(*ve.checks, Check.fail("nvidia.extra", "made up", "evidence.check_failed")))
    policy = load_policy(_policy("min_driver: '500.0'"))
    result = appraise(policy, [tampered], insecure_allowed=False)
    assert not result.passed and [c.claim for c in result.failed] == ["verified"]


@pytest.mark.parametrize("bad", ["require_checks: []", "require_checks: [Nvidia OCSP]", "require_checks: nvidia.ocsp"])
def test_require_checks_schema(bad: str):
    with pytest.raises(PolicyError):
        load_policy(_policy(bad))


def test_check_cannot_pass_and_skip():
    with pytest.raises(ValueError, match="both passed and skipped"):
        Check("x.y", True, skipped=True)
    assert Check.skip("x.y", "not given").to_json() == {"name": "x.y", "result": "skipped", "detail": "not given"}
