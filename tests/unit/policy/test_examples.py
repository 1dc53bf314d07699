"""Every example policy validates, and the TDX/SNP examples appraise real vectors as expected."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jsonschema
import pytest
import yaml

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy, policy_schema
from tests.vectors.manifest import Vector, load_manifest

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
EXAMPLES = sorted(POLICIES.glob("*.yaml"))


def test_every_required_example_exists():
    names = {p.stem for p in EXAMPLES}
    assert {"tdx-cvm", "snp-cvm", "training-cvm", "trusted-loader", "sim"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(path: Path):
    policy = load_policy(path.read_text())
    assert policy.name == path.stem
    # the published schema (policies/policy.schema.json) accepts the document as written, too
    schema = json.loads((POLICIES / "policy.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(policy.document)))
    assert len(policy.digest) == 64


def test_published_schema_is_the_package_schema():
    assert json.loads((POLICIES / "policy.schema.json").read_text()) == policy_schema()


def test_sim_example_is_what_init_applies():
    from importlib import resources

    packaged = resources.files("ca_service.data").joinpath("sim.yaml").read_text()
    assert load_policy(packaged).digest == load_policy((POLICIES / "sim.yaml").read_text()).digest


def _verify(v: Vector):
    if v.tee == "snp":
        coll = [v.read(r) for r in ["vek", "cert_chain"] + (["crl"] if "crl" in v.files else [])]
        kind, data = "snp-report", v.read("report")
    else:
        coll = [v.read("pck_cert_chain"), v.read("collateral")]
        kind, data = f"{v.tee}-quote", v.read("quote")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a vector without its CRL (the AWS VLEK) is verified accepting that, so the appraisal shows it
        return verify(kind, data, collateral=coll, at=v.verify_time,
                      allow_unchecked_revocation=v.tee == "snp" and "crl" not in v.files)


def _vector(path: str) -> Vector:
    return next(v for v in load_manifest() if v.path == path)


# (policy, vector) -> None when the policy admits it, else the claims that must fail (exactly).
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("tdx-cvm", "tdx/dcapqvl-v4-uptodate"): None,
    ("tdx-cvm", "tdx/gcp-c3-v4-uptodate"): None,
    # an up-to-date v5 quote on a newer TDX module and other firmware
    ("tdx-cvm", "tdx/gotdxguest-v5-uptodate"): {"mrseam", "mrtd", "rtmr0", "rtmr1"},
    # out of date, three advisories, old TCB date, and other firmware
    ("tdx-cvm", "tdx/automata-v4-outofdate"): {"tcb_status", "advisories", "min_tcb_date", "min_tee_tcb_svn",
                                               "mrseam", "mrtd", "rtmr0", "rtmr1"},
    ("tdx-cvm", "tdx/trustee-v4-00A06D080000-outofdate"): {"tcb_status", "min_tcb_date", "min_tee_tcb_svn",
                                                            "mrseam", "mrtd", "rtmr0", "rtmr1"},
    ("snp-cvm", "snp/milan-virtee-vcek"): None,
    ("snp-cvm", "snp/genoa-azure-vcek"): None,
    ("snp-cvm", "snp/milan-azure-vtpm"): None,
    # genuine, but a launch measurement the policy does not list
    ("snp-cvm", "snp/milan-trustee-vcek"): {"measurement"},
    # AWS: VLEK-signed, guest at VMPL1, other image; and no VLEK CRL, which snp-cvm does not accept
    ("snp-cvm", "snp/milan-aws-vlek"): {"signing_key", "vmpl", "measurement", "revocation.amd_crl"},
}


@pytest.mark.parametrize("case", sorted(EXPECTED), ids=[f"{p}:{v}" for p, v in sorted(EXPECTED)])
def test_examples_appraise_real_vectors(case: tuple[str, str]):
    policy_name, vector_path = case
    policy = load_policy((POLICIES / f"{policy_name}.yaml").read_text())
    ve = _verify(_vector(vector_path))
    result = appraise(policy, [ve], insecure_allowed=False)
    expected_fail = EXPECTED[case]
    if expected_fail is None:
        assert result.passed, [c.to_json() for c in result.failed]
    else:
        assert not result.passed
        assert {c.claim for c in result.failed} == expected_fail
        for c in result.failed:  # every refusal names the claim, the reference value and the actual one
            assert c.expected is not None and c.actual is not None, c


def test_snp_checks_read_the_verifier_claims():
    ve = _verify(_vector("snp/milan-virtee-vcek"))
    policy = load_policy((POLICIES / "snp-cvm.yaml").read_text())
    checks = {c.claim: c for c in appraise(policy, [ve], insecure_allowed=False).checks}
    assert checks["min_tcb"].actual == {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
    assert checks["product"].actual == "Milan"
    assert checks["debug"].actual is False
    assert checks["guest_policy"].actual == {"debug": False, "migrate_ma": False}
    assert checks["vmpl"].actual == 0


def test_tdx_checks_read_the_verifier_claims():
    ve = _verify(_vector("tdx/dcapqvl-v4-uptodate"))
    policy = load_policy((POLICIES / "tdx-cvm.yaml").read_text())
    checks = {c.claim: c for c in appraise(policy, [ve], insecure_allowed=False).checks}
    assert checks["min_tcb_evaluation_data_number"].actual == 17
    assert checks["min_tcb_date"].actual == "2024-03-13T00:00:00Z"
    assert checks["debug"].actual is False
    assert checks["tcb_status"].actual == "UpToDate"


def test_refused_vectors_never_reach_appraisal():
    """Below the vendor baseline (debug TD, SEPT_VE_DISABLE unset) is a verification refusal."""
    for path in ("tdx/trustee-v4-debug-td", "tdx/azure-dcesv5-vtpm-sept-ve-disabled"):
        with pytest.raises(EvidenceError):
            _verify(_vector(path))


def test_training_policy_needs_both_items():
    policy = load_policy((POLICIES / "training-cvm.yaml").read_text())
    ve = _verify(_vector("tdx/dcapqvl-v4-uptodate"))
    result = appraise(policy, [ve], insecure_allowed=False)
    failed = {(c.evidence, c.claim) for c in result.failed}
    assert failed == {("nvidia-gpu", "present")}


def test_examples_are_plain_yaml():
    for path in EXAMPLES:
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_training_policy_composite_with_a_real_gpu():
    """TDX quote + H100 report with its RIMs, each verified as of its own vector time, then
    appraised together: the only failing claim is the 2023 driver below min_driver 550.0."""
    from ca_service.evidence import verify

    policy = load_policy((POLICIES / "training-cvm.yaml").read_text())
    tdx = _verify(_vector("tdx/dcapqvl-v4-uptodate"))
    gv = _vector("nvidia/hopper-h100-nvtrust-2023-with-rims")
    coll = [gv.read("cert_chain")] + [(gv.dir / name).read_bytes() for name in gv.files["rims_test_no_gpu"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpu = verify("nvidia-gpu", gv.read("report"), collateral=coll, at=gv.verify_time)
    assert gpu.claims["rim"]["mismatched_indexes"] == []
    result = appraise(policy, [tdx, gpu], insecure_allowed=False)
    failed = {(c.evidence, c.claim) for c in result.failed}
    assert failed == {("nvidia-gpu", "min_driver")}
    assert next(c for c in result.checks if c.claim == "min_driver").actual == "545.00"


def test_trusted_loader_example_is_what_the_demo_applies():
    from importlib import resources

    packaged = resources.files("ca_service.data").joinpath("trusted-loader.yaml").read_text()
    assert load_policy(packaged).digest == load_policy((POLICIES / "trusted-loader.yaml").read_text()).digest


def test_snp_loader_digest_from_a_real_report():
    """A genuine SNP report: its HOST_DATA (sha256:) or launch MEASUREMENT (sha384:) is the loader
    digest, as the policy's loader_digest_from says (docs/loader.md)."""
    from ca_service.evidence.instance import instance_of
    from ca_service.policy.model import policy_from_document

    ve = _verify(_vector("snp/milan-virtee-vcek"))
    host, meas = ve.claims["host_data"], ve.claims["measurement"]

    def appraise_with(source: str, digest: str) -> bool:
        doc = {"name": "snp-loader", "certificate": {"max_lifetime": "1h"},
               "evidence": {"required": ["snp-report"],
                            "snp-report": {"loader_digest_from": source, "loader_digests": [digest]}}}
        return appraise(policy_from_document(doc), [ve], insecure_allowed=False).passed

    assert appraise_with("host_data", f"sha256:{host}") and appraise_with("measurement", f"sha384:{meas}")
    assert not appraise_with("host_data", f"sha384:{meas}") and not appraise_with("measurement", f"sha256:{host}")
    assert not appraise_with("host_data", "sha256:" + "11" * 32)  # this host left HOST_DATA zero
    # the TEE instance of an SNP loader: launch measurement and chip
    inst = instance_of(ve)
    assert inst is not None and dict(inst.registers) == {"measurement": meas, "chip_id": ve.claims["chip_id"]}
