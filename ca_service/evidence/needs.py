"""What collateral a piece of evidence needs, as typed vendor resources (STYLE.md 16).

Each family states its own needs beside its verifier (``evidence/intel/needs.py``,
``evidence/snp/needs.py``, ``evidence/nvidia/needs.py``, ``evidence/nitro/needs.py``): a pure function
of the evidence bytes (and, for a GPU, of the device chain sent with it) that reads only what picks the
resources (the FMSPC and PCK CA of a quote; the product line, chip id and reported TCB of a report; the
certificates of a device chain; nothing for Nitro, whose root is pinned and whose chain is in the
document).
Nothing here is trusted: the verifier later checks that the collateral belongs to the evidence. The
IO edge maps each resource to an allowlisted vendor URL (``collateral/endpoints.py``, ``endpoint_for``);
no URL ever comes from evidence.

A family may not know which of a few resources applies (an SNP report v2 does not name its product
line): it returns *alternatives*, each a complete set, tried in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ca_service.errors import EvidenceUnsupported

if TYPE_CHECKING:
    from ca_service.evidence.trust import TrustRoots


@dataclass(frozen=True)
class IntelTcbInfo:
    tee: str  # "tdx" | "sgx"
    fmspc: bytes


@dataclass(frozen=True)
class IntelQeIdentity:
    tee: str


@dataclass(frozen=True)
class IntelPckCrl:
    ca: str  # "platform" | "processor"


@dataclass(frozen=True)
class IntelRootCaCrl:
    pass


@dataclass(frozen=True)
class AmdVcek:
    product: str
    hwid: bytes
    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None = None


@dataclass(frozen=True)
class AmdCertChain:
    product: str
    signer: str = "vcek"


@dataclass(frozen=True)
class AmdCrl:
    product: str
    signer: str = "vcek"


@dataclass(frozen=True)
class NvidiaOcsp:
    """NVIDIA's OCSP answer for one certificate of a GPU's device chain (RFC 6960 CertID with SHA-384,
    as NVIDIA's verifiers ask): the issuer's name and key hashes and the certificate's serial.
    ``issuer_chain``: the device chain from the pinned root down to the issuer (DER), what the answer
    is verified with before it is cached (it is not part of the resource's identity)."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    issuer_chain: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class NvidiaRim:
    """A reference integrity manifest the GPU's measurements are compared with, by its RIM service id
    (``NV_GPU_DRIVER_GH100_<driver version>``, ``NV_GPU_VBIOS_<project>_<project SKU>_<chip SKU>_<VBIOS
    version without dots>``, as nvtrust names them). Sent with the evidence: the CA does not fetch RIMs
    yet, so no endpoint serves this need (``collateral/endpoints.endpoint_for`` refuses it)."""

    rim_id: str
    role: str  # "driver" | "vbios"


@dataclass(frozen=True)
class Sent:
    """Something only the request can supply (no vendor publishes it): an SNP report's VLEK (AMD KDS
    publishes none). The CA gives the verifier the request's collateral as sent, beside what it adds."""

    what: str


Need = (IntelTcbInfo | IntelQeIdentity | IntelPckCrl | IntelRootCaCrl | AmdVcek | AmdCertChain | AmdCrl
        | NvidiaOcsp | NvidiaRim | Sent)
# the needs that are revocation sources: one the CA cannot get is left out, and the verifier reports it
# missing for the policy's rule to judge (docs/revocation.md), instead of the request being refused here
REVOCATION_NEEDS = (IntelPckCrl, IntelRootCaCrl, AmdCrl, NvidiaOcsp)
# the needs no vendor endpoint serves: the request supplies them
SENT_NEEDS = (Sent, NvidiaRim)


def served(alternative: Sequence[Need]) -> tuple[Need, ...]:
    """The needs of ``alternative`` that a vendor endpoint serves (all but :data:`SENT_NEEDS`)."""
    return tuple(n for n in alternative if not isinstance(n, SENT_NEEDS))
Alternatives = tuple[tuple[Need, ...], ...]

SUPPLIED_KINDS = ("tdx-quote", "sgx-quote", "snp-report")  # the CA finds all their collateral itself


def needs_for(kind: str, evidence: bytes, collateral: Sequence[bytes] = (), roots: TrustRoots | None = None
              ) -> Alternatives:
    """The collateral ``kind`` evidence needs: alternatives, each a complete set of resources.

    ``collateral``: what came with the evidence, for a family whose needs are read from it (NVIDIA: the
    device chain); ``roots``: the pins a chain is ordered to (the vendors' by default).

    Raises:
        EvidenceUnsupported (``evidence.unsupported``): a kind whose collateral the CA does not supply.
        EvidenceMalformed, CollateralMissing: the family's own (see its ``needs``).
    """
    if kind in ("tdx-quote", "sgx-quote"):
        from ca_service.evidence.intel.needs import needs as intel_needs

        return (intel_needs(evidence),)
    if kind == "snp-report":
        from ca_service.evidence.snp.needs import needs as snp_needs

        return snp_needs(evidence, collateral)
    if kind == "nvidia-gpu":
        from ca_service.evidence.nvidia.needs import needs as nvidia_needs
        from ca_service.evidence.trust import DEFAULT_ROOTS

        return (nvidia_needs(evidence, collateral, roots or DEFAULT_ROOTS),)
    if kind == "nitro":
        from ca_service.evidence.nitro.needs import needs as nitro_needs

        return (nitro_needs(evidence),)
    raise EvidenceUnsupported(f"the CA supplies no collateral for {kind!r}: send it with the evidence")


def detect_kind(evidence: bytes) -> str:
    """Which kind an evidence file is, by its content (an Intel quote header, an SNP report or an Azure
    HCL report wrapping one, an NVIDIA GPU's SPDM GET_MEASUREMENTS exchange).

    Raises:
        EvidenceUnsupported: none of them.
    """
    from ca_service.errors import EvidenceError
    from ca_service.evidence.intel.parse import TEE_TYPE_TDX, parse_quote
    from ca_service.evidence.snp.azure import is_hcl_report, parse_hcl_report
    from ca_service.evidence.snp.parse import parse_report

    try:
        quote = parse_quote(evidence)
        return "tdx-quote" if quote.header.tee_type == TEE_TYPE_TDX else "sgx-quote"
    except EvidenceError:
        pass
    try:
        parse_report(parse_hcl_report(evidence).snp_report if is_hcl_report(evidence) else evidence)
        return "snp-report"
    except EvidenceError:
        pass
    from ca_service.evidence.nvidia.parse import parse_report as parse_gpu_report

    try:
        parse_gpu_report(evidence)
        return "nvidia-gpu"
    except EvidenceError:
        pass
    raise EvidenceUnsupported("neither an Intel quote, an SEV-SNP report nor an NVIDIA GPU report")
