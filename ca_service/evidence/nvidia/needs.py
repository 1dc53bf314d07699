"""What an NVIDIA GPU attestation report needs (PURE): NVIDIA's OCSP answer for every certificate of
its device chain that NVIDIA's responder covers (all but the pinned root and the attestation-key leaf,
``ocsp.py``), each named by its RFC 6960 CertID with SHA-384 as NVIDIA's verifiers ask.

The device chain is per GPU and comes with the evidence (nvtrust ``gpuAkCertChain``), so the needs are
read from it: it is ordered from the pinned NVIDIA Device Identity CA down to the leaf, every link
verified (``chain.order_chain``), and each certificate's issuer chain travels with its need so the
answer can be checked before the CA keeps it. Validity windows are the verifier's, at its time.

The driver and VBIOS RIMs are named by their RIM service ids (:class:`NvidiaRim`, from the report's
driver version and its VBIOS version, project, project SKU and chip SKU), but are not fetched by the CA
yet: the request sends them (docs/nvidia-gpu.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.errors import CollateralMissing
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.needs import Need, NvidiaOcsp, NvidiaRim
from ca_service.evidence.nvidia.chain import order_chain
from ca_service.evidence.nvidia.ocsp_answer import cert_id
from ca_service.evidence.nvidia.parse import AttestationReport, parse_report
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots


def rim_ids(report: AttestationReport) -> tuple[NvidiaRim, ...]:
    """The driver and VBIOS RIMs of this report, by the ids NVIDIA's RIM service files them under
    (nvtrust ``get_driver_rim_file_id`` / ``get_vbios_rim_file_id``); a field the report lacks names none."""
    claims = report.opaque_claims()
    out = []
    if report.driver_version:
        out.append(NvidiaRim(f"NV_GPU_DRIVER_GH100_{report.driver_version}", "driver"))
    parts = [str(claims.get(k) or "") for k in ("project", "project_sku", "chip_sku")]
    if report.vbios_version and all(parts):
        out.append(NvidiaRim("NV_GPU_VBIOS_" + "_".join(parts) + "_" + report.vbios_version.replace(".", ""), "vbios"))
    return tuple(out)


def needs(evidence: bytes, collateral: Sequence[bytes], roots: TrustRoots = DEFAULT_ROOTS) -> tuple[Need, ...]:
    """One :class:`NvidiaOcsp` per certificate between the root and the leaf, root side first, then
    the report's RIMs (:func:`rim_ids`, sent with the evidence).

    Raises:
        EvidenceMalformed / EvidenceUnsupported: the report is not a signed SPDM GET_MEASUREMENTS exchange.
        CollateralMissing (``evidence.collateral_missing``): no device certificates were sent.
        CollateralInvalid, RootUntrusted, ChainInvalid: the device chain does not build to a pinned root.
    """
    report = parse_report(evidence)
    certs = load_collateral(collateral).certificates
    if not certs:
        raise CollateralMissing("no device certificate chain given (nvtrust gpuAkCertChain)")
    chain = order_chain(certs, roots.nvidia_device, "device").certificates
    out: list[Need] = []
    for i in range(1, len(chain) - 1):
        name_hash, key_hash = cert_id(chain[i - 1])
        out.append(NvidiaOcsp(name_hash, key_hash, chain[i].serial_number,
                              tuple(c.public_bytes(Encoding.DER) for c in chain[:i])))
    return (*out, *rim_ids(report))
