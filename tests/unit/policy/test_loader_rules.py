"""Loader policies: which policies are, and the SNP loader digest read from HOST_DATA or MEASUREMENT."""

from __future__ import annotations

import hashlib

import pytest

from ca_service.errors import PolicyError
from ca_service.evidence.base import VerifiedEvidence
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy, policy_from_document

HOST = hashlib.sha256(b"loader").hexdigest()
MEAS = hashlib.sha384(b"image").hexdigest()


def _snp_policy(source: str | None, digests: list[str]):
    section = {"loader_digests": digests, **({"loader_digest_from": source} if source else {})}
    return policy_from_document({"name": "snp-loader", "evidence": {"required": ["snp-report"], "snp-report": section},
                                 "certificate": {"max_lifetime": "1h"}})


def _snp(**claims):
    return VerifiedEvidence(kind="snp-report", report_data=b"", claims=claims, checks=(), evidence_sha256="0" * 64)


@pytest.mark.parametrize(("source", "digest", "passed"), [
    ("host_data", f"sha256:{HOST}", True), ("measurement", f"sha384:{MEAS}", True),
    ("host_data", f"sha384:{MEAS}", False), ("measurement", f"sha256:{HOST}", False), (None, f"sha256:{HOST}", False),
])
def test_snp_loader_digest_source(source, digest, passed):
    policy = _snp_policy(source, [digest])
    assert policy.is_loader
    result = appraise(policy, [_snp(host_data=HOST, measurement=MEAS)], insecure_allowed=False)
    check = next(c for c in result.checks if c.claim == "loader_digests")
    assert check.passed is passed and result.passed is passed
    assert not any(c.claim == "loader_digest_from" for c in result.checks)  # a qualifier, never a pass


def test_repo_policies_which_are_loader_policies():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "policies"
    assert load_policy((root / "trusted-loader.yaml").read_text()).is_loader
    assert not load_policy((root / "sim.yaml").read_text()).is_loader


def test_integrity_reports_section_is_validated():
    doc = {"name": "x", "evidence": {"required": ["sim"], "sim": {"loader_digests": ["sha384:" + MEAS]}},
           "certificate": {"max_lifetime": "1h"}, "integrity_reports": {"measured": ["engine", "args"]}}
    assert policy_from_document(doc).integrity_reports == {"measured": ["engine", "args"]}
    with pytest.raises(PolicyError):
        policy_from_document({**doc, "integrity_reports": {"measured": ["Engine"]}})
    with pytest.raises(PolicyError):
        policy_from_document({**doc, "integrity_reports": {"measured": []}})
