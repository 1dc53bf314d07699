"""The policy's revocation rule (docs/revocation.md): schema, defaults, and the appraisal re-deriving it."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest

from ca_service.ca.ear import build_ear
from ca_service.errors import PolicyError
from ca_service.evidence import verify
from ca_service.evidence.revocation import STRICT, RevocationRule
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy
from tests.vectors.manifest import vectors_for

BASE = ("name: p\nevidence:\n  required: [snp-report]\n  snp-report:\n    debug: false\n"
        "certificate:\n  max_lifetime: 1h\n")
VLEK = next(v for v in vectors_for("snp") if v.id == "snp/milan-aws-vlek")


def _policy(extra: str = ""):
    return load_policy(BASE + extra)


def test_default_is_strict():
    assert _policy().revocation_rule == STRICT == RevocationRule(False, timedelta(0))


def test_the_two_settings():
    rule = _policy("revocation:\n  allow_unchecked: true\ncollateral:\n  max_age_past_next_update: 12h\n").revocation_rule
    assert rule == RevocationRule(True, timedelta(hours=12))
    assert _policy("revocation:\n  allow_unchecked: false\n").revocation_rule == STRICT


@pytest.mark.parametrize("bad", [
    "revocation: {}\n",                          # an empty section is a refusal, not a pass
    "revocation:\n  allow_unchecked: yes please\n",
    "revocation:\n  allow_unchecked: 1\n",
    "revocation:\n  check: false\n",             # unknown key
    "revocation: true\n",
    "collateral:\n  max_age_past_next_update: -1h\n",
])
def test_schema_refuses(bad: str):
    with pytest.raises(PolicyError):
        _policy(bad)


def test_negative_grace_is_not_a_rule():
    with pytest.raises(ValueError):
        RevocationRule(grace=timedelta(seconds=-1))


def _unchecked_vlek():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return verify("snp-report", VLEK.read("report"), collateral=[VLEK.read("vek"), VLEK.read("cert_chain")],
                      at=VLEK.verify_time, allow_unchecked_revocation=True)


def test_appraisal_records_the_state_and_the_policy_decides():
    ve = _unchecked_vlek()
    strict = {c.claim: c for c in appraise(_policy(), [ve], insecure_allowed=False).checks}
    # verified under a looser rule than the policy's: the appraisal does not pass it
    assert strict["revocation.amd_crl"].passed is False and strict["revocation.amd_crl"].actual == "missing"
    allowing = appraise(_policy("revocation:\n  allow_unchecked: true\n"), [ve], insecure_allowed=False)
    check = next(c for c in allowing.checks if c.claim == "revocation.amd_crl")
    assert check.passed and check.expected == "good" and check.actual == "missing"
    # a grace accepts only an expired source, not a missing one
    graced = appraise(_policy("collateral:\n  max_age_past_next_update: 3650d\n"), [ve], insecure_allowed=False)
    assert not next(c for c in graced.checks if c.claim == "revocation.amd_crl").passed


def test_ear_warns_for_what_was_accepted():
    ve = _unchecked_vlek()
    policy = _policy("revocation:\n  allow_unchecked: true\n")
    appraisal = appraise(policy, [ve], insecure_allowed=False)
    assert appraisal.passed
    ear = build_ear([ve], appraisal, policy_id="urn:x", issued_at=VLEK.verify_time)
    sub = ear["submods"]["snp-report"]
    assert sub["ca-service.revocation"] == {"amd_crl": "missing"}
    assert sub["ca-service.warnings"] == ["revocation.amd_crl_missing"]
    assert sub["ear.trustworthiness-vector"]["hardware"] == 32 and sub["ear.status"] == "warning"
    assert ear["ear.status"] == "warning"
