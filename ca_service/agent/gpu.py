"""NVIDIA GPU evidence for the agent, through NVML (NVIDIA's ``nvidia-ml-py`` bindings, module ``pynvml``).

``nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)`` returns the SPDM GET_MEASUREMENTS
exchange the ``nvidia-gpu`` verifier takes (``attestationReport[:attestationReportSize]``), signed
over our 32-byte nonce (DESIGN.md flow 1: a 32-byte field takes the first 32 bytes of the binding);
``nvmlDeviceGetConfComputeGpuCertificate(handle)`` the device's attestation certificate chain (PEM),
sent as the item's collateral. Where NVML or a GPU is absent the agent says so and sends none.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

GpuItem = tuple[str, bytes, dict[str, Any]]


def _load_nvml() -> Any:
    import pynvml  # optional: NVIDIA's nvidia-ml-py, on GPU hosts only

    return pynvml


def gpu_evidence(nonce: bytes, load: Callable[[], Any] = _load_nvml) -> tuple[list[GpuItem], str]:
    """Evidence of every GPU NVML lists, and a sentence for the operator saying what was (not) sent."""
    if len(nonce) != 32:
        raise ValueError("the GPU nonce is 32 bytes")
    try:
        nvml = load()
    except ImportError:
        return [], "GPU: no evidence sent: NVIDIA's NVML bindings (nvidia-ml-py) are not installed"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_*: no driver, no device nodes (pynvml raises its own family)
        return [], f"GPU: no evidence sent: NVML is not usable here ({type(exc).__name__})"
    try:
        count = int(nvml.nvmlDeviceGetCount())
        items: list[GpuItem] = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            report = nvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
            cert = nvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
            blob = bytes(report.attestationReport[: report.attestationReportSize])
            chain = bytes(cert.attestationCertChain[: cert.attestationCertChainSize])
            items.append(("nvidia-gpu", blob, {"collateral": [base64.b64encode(chain).decode()]}))
    except Exception as exc:  # a GPU not in CC mode answers NVMLError_NotSupported
        return [], f"GPU: no evidence sent: NVML refused the attestation report ({type(exc).__name__})"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: S110 - shutting NVML down is best effort; the result is already taken
            pass
    if not items:
        return [], "GPU: no NVIDIA GPU present"
    return items, f"GPU: {len(items)} NVIDIA GPU report(s) from NVML ({', '.join(str(len(i[1])) for i in items)} bytes)"
