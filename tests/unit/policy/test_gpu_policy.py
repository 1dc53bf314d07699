"""Pure rules for GPU policies: GPU-only is not applicable (policy.gpu_only); unchecked revocation
is a refusal naming the item unless the policy's revocation.allow_unchecked says otherwise."""

from __future__ import annotations

import pytest

from ca_service.errors import EvidenceError, PolicyError
from ca_service.evidence import verify
from ca_service.policy.model import check_applicable, load_policy
from ca_service.services.issuance import refuse_unchecked_revocation
from tests.vectors.manifest import vectors_for

GPU = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2025")


def _doc(required: str, extra: str = "") -> str:
    sections = {"nvidia-gpu": "  nvidia-gpu:\n    min_driver: '550.0'\n", "tdx-quote": "  tdx-quote:\n    debug: false\n",
                "snp-report": "  snp-report:\n    debug: false\n", "nitro": "  nitro:\n    debug: false\n",
                "sgx-quote": "  sgx-quote:\n    debug: false\n", "sim": "  sim:\n    debug: false\n"}
    kinds = [k.strip() for k in required.strip("[]").split(",")]
    return (f"name: p\nevidence:\n  required: {required}\n" + "".join(sections[k] for k in kinds) + extra
            + "certificate:\n  max_lifetime: 1h\n")


def test_gpu_only_is_refused():
    with pytest.raises(PolicyError) as err:
        check_applicable(load_policy(_doc("[nvidia-gpu]")))
    assert err.value.code == "policy.gpu_only" and err.value.status == 422
    for cpu in ("tdx-quote", "snp-report", "sgx-quote", "nitro", "sim"):
        check_applicable(load_policy(_doc(f"[{cpu}, nvidia-gpu]")))
        check_applicable(load_policy(_doc(f"[{cpu}]")))


def test_revocation_rule():
    gpu = verify("nvidia-gpu", GPU.read("report"), collateral=[GPU.read("cert_chain")], at=GPU.verify_time)
    strict = load_policy(_doc("[tdx-quote, nvidia-gpu]"))
    assert strict.allow_unchecked_revocation is False
    with pytest.raises(EvidenceError) as err:
        refuse_unchecked_revocation(strict, [gpu])
    assert err.value.code == "revocation.nvidia_ocsp_missing" and err.value.fields["evidence_type"] == "nvidia-gpu"
    lenient = load_policy(_doc("[tdx-quote, nvidia-gpu]", "revocation:\n  allow_unchecked: true\n"))
    assert lenient.allow_unchecked_revocation is True
    refuse_unchecked_revocation(lenient, [gpu])  # accepted: the EAR warns instead
    explicit = load_policy(_doc("[tdx-quote, nvidia-gpu]", "revocation:\n  allow_unchecked: false\n"))
    with pytest.raises(EvidenceError):
        refuse_unchecked_revocation(explicit, [gpu])
    for bad in ("revocation: {}\n", "revocation:\n  allow_unchecked: yes please\n", "revocation:\n  grace: 1h\n"):
        with pytest.raises(PolicyError):
            load_policy(_doc("[tdx-quote, nvidia-gpu]", bad))
