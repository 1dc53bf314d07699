"""The agent's GPU evidence through NVML, with a fake ``pynvml`` returning a real Hopper report."""

from __future__ import annotations

import base64
import ctypes
from pathlib import Path
from types import SimpleNamespace

import pytest

from ca_service.agent.client import AgentError
from ca_service.agent.gpu import gpu_evidence
from ca_service.agent.tee import TsmEvidenceSource
from ca_service.evidence import verify
from tests.unit.agent.fake_tsm import FakeConfigfs, fake_ccel
from tests.vectors.manifest import vectors_for

H100 = {v.path: v for v in vectors_for("nvidia")}["nvidia/hopper-h100-nvtrust-2025"]
GCE = {v.path: v for v in vectors_for("tdx-eventlog")}["tdx-eventlog/gce-cos113-ccel"]
RD = bytes(range(64))


class FakeNvml:
    """pynvml's calls, answering with ctypes arrays the way nvidia-ml-py's structures hold them."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 1, init_fails: bool = False, report_fails: bool = False) -> None:
        self.gpus, self.init_fails, self.report_fails = gpus, init_fails, report_fails
        self.nonces: list[bytes] = []
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle: int, nonce: bytes) -> SimpleNamespace:
        if self.report_fails:
            raise self.NVMLError("Not Supported")
        self.nonces.append(bytes(nonce))
        raw = H100.read("report")
        buf = (ctypes.c_uint8 * 8192)(*raw)
        return SimpleNamespace(attestationReport=buf, attestationReportSize=len(raw))

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: int) -> SimpleNamespace:
        chain = H100.read("cert_chain")
        buf = (ctypes.c_uint8 * 8192)(*chain)
        return SimpleNamespace(attestationCertChain=buf, attestationCertChainSize=len(chain))


def test_gpu_report_and_chain_from_nvml_verify():
    nvml = FakeNvml()
    items, note = gpu_evidence(RD[:32], lambda: nvml)
    assert note.startswith("GPU: 1 NVIDIA GPU report(s) from NVML")
    (kind, blob, extra), = items
    assert kind == "nvidia-gpu" and blob == H100.read("report") and nvml.nonces == [RD[:32]] and nvml.shutdown
    chain = base64.b64decode(extra["collateral"][0])
    assert chain == H100.read("cert_chain")
    # what the agent sends is what the nvidia-gpu verifier takes (as of the vector's time)
    ve = verify("nvidia-gpu", blob, collateral=[chain], at=H100.verify_time)
    assert ve.kind == "nvidia-gpu"


def test_the_agent_says_why_there_is_no_gpu_evidence():
    def missing():
        raise ImportError("No module named 'pynvml'")

    assert gpu_evidence(RD[:32], missing) == (
        [], "GPU: no evidence sent: NVIDIA's NVML bindings (nvidia-ml-py) are not installed")
    assert gpu_evidence(RD[:32], lambda: FakeNvml(init_fails=True))[1] == \
        "GPU: no evidence sent: NVML is not usable here (NVMLError)"
    assert gpu_evidence(RD[:32], lambda: FakeNvml(gpus=0)) == ([], "GPU: no NVIDIA GPU present")
    assert "refused the attestation report" in gpu_evidence(RD[:32], lambda: FakeNvml(report_fails=True))[1]
    with pytest.raises(ValueError):
        gpu_evidence(RD, lambda: FakeNvml())


def test_tdx_and_gpu_items_in_one_request_when_the_policy_requires_both(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    needs = {"required": ["tdx-quote", "nvidia-gpu"], "items": {"tdx-quote": {"event_log": False},
                                                                 "nvidia-gpu": {"event_log": False}}}
    src = TsmEvidenceSource(needs=needs, root=fs.root, ccel_path=fake_ccel(tmp_path, GCE.read("ccel")),
                            gpu_loader=FakeNvml)
    items = src(RD)
    assert [i[0] for i in items] == ["tdx-quote", "nvidia-gpu"]
    # a policy without nvidia-gpu: not sent (an unrequested type would be refused), and said so
    src = TsmEvidenceSource(needs={"required": ["tdx-quote"], "items": {}}, root=fs.root, gpu_loader=FakeNvml)
    assert [i[0] for i in src(RD)] == ["tdx-quote"]
    assert "GPU: not sent (the policy does not require nvidia-gpu)" in src.notes
    # required but no NVML: the agent stops and says why, before sending anything
    def missing():
        raise ImportError

    src = TsmEvidenceSource(needs=needs, root=fs.root, gpu_loader=missing)
    with pytest.raises(AgentError, match="requires NVIDIA GPU evidence; no evidence sent: NVIDIA's NVML"):
        src(RD)
