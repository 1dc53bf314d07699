"""What collateral a piece of evidence needs, as typed vendor resources (STYLE.md 16).

Each family states its own needs beside its verifier (``evidence/intel/needs.py``,
``evidence/snp/needs.py``): a pure function of the evidence bytes that reads only what picks the
resources (the FMSPC and PCK CA of a quote; the product line, chip id and reported TCB of a report).
Nothing here is trusted: the verifier later checks that the collateral belongs to the evidence. The
IO edge maps each resource to an allowlisted vendor URL (``collateral/endpoints.py``, ``endpoint_for``);
no URL ever comes from evidence.

A family may not know which of a few resources applies (an SNP report v2 does not name its product
line): it returns *alternatives*, each a complete set, tried in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ca_service.errors import EvidenceUnsupported


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


Need = IntelTcbInfo | IntelQeIdentity | IntelPckCrl | IntelRootCaCrl | AmdVcek | AmdCertChain | AmdCrl
Alternatives = tuple[tuple[Need, ...], ...]

SUPPLIED_KINDS = ("tdx-quote", "sgx-quote", "snp-report")


def needs_for(kind: str, evidence: bytes) -> Alternatives:
    """The collateral ``kind`` evidence needs: alternatives, each a complete set of resources.

    Raises:
        EvidenceUnsupported (``evidence.unsupported``): a kind whose collateral the CA does not supply.
        EvidenceMalformed, CollateralMissing: the family's own (see its ``needs``).
    """
    if kind in ("tdx-quote", "sgx-quote"):
        from ca_service.evidence.intel.needs import needs as intel_needs

        return (intel_needs(evidence),)
    if kind == "snp-report":
        from ca_service.evidence.snp.needs import needs as snp_needs

        return snp_needs(evidence)
    raise EvidenceUnsupported(f"the CA supplies no collateral for {kind!r}: send it with the evidence")


def detect_kind(evidence: bytes) -> str:
    """Which supplied kind an evidence file is, by its content (an Intel quote header, an SNP report
    or an Azure HCL report wrapping one).

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
    raise EvidenceUnsupported("neither an Intel quote nor an SEV-SNP report")
