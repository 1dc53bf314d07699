"""What an SEV-SNP report (raw, or inside an Azure HCL report) needs from AMD KDS (publication 57230
section 4): the VCEK for its chip id and reported TCB, the product line's ASK+ARK chain and its CRL.

A report v2 has no CPUID fields, so its product line is not known: one alternative per line with the
family 19h TCB layout (KDS answers 404 for the wrong line). VLEKs are not published by KDS, and a
masked chip id names no VCEK: both must come with the evidence.
"""

from __future__ import annotations

from ca_service.errors import CollateralMissing, EvidenceUnsupported
from ca_service.evidence.needs import AmdCertChain, AmdCrl, AmdVcek, Need
from ca_service.evidence.snp.azure import is_hcl_report, parse_hcl_report
from ca_service.evidence.snp.certs import PRODUCT_LINES, ProductLine
from ca_service.evidence.snp.parse import AttestationReport, SigningKey, TcbLayout, TcbVersion, parse_report


def _lines(report: AttestationReport) -> list[ProductLine]:
    if report.cpuid is None:  # report v2: no CPUID; those predate Turin (family 1Ah)
        return [line for line in PRODUCT_LINES.values() if line.tcb_layout is TcbLayout.FAMILY_19H]
    return [line for line in PRODUCT_LINES.values()
            if line.matches_cpuid(report.cpuid.family, report.cpuid.model)]


def needs(evidence: bytes) -> tuple[tuple[Need, ...], ...]:
    """One alternative per candidate product line: (VCEK, cert_chain, CRL).

    Raises:
        EvidenceMalformed: the report cannot be parsed.
        CollateralMissing (``evidence.collateral_missing``): VLEK-signed, chip id masked, or no known line.
        EvidenceUnsupported: SIGNING_KEY names neither VCEK nor VLEK.
    """
    report = parse_report(parse_hcl_report(evidence).snp_report if is_hcl_report(evidence) else evidence)
    if report.signing_key is SigningKey.VLEK:
        raise CollateralMissing("AMD KDS does not publish VLEK certificates: send the VLEK with the evidence")
    if report.signing_key is not SigningKey.VCEK:
        raise EvidenceUnsupported("SIGNING_KEY is neither VCEK nor VLEK")
    if report.chip_id_masked:
        raise CollateralMissing("CHIP_ID is masked: the VCEK cannot be looked up, send it with the evidence")
    lines = _lines(report)
    if not lines:
        raise CollateralMissing("the report's CPUID names no AMD product line we know")
    out = []
    for line in lines:
        t = TcbVersion.decode(report.reported_tcb_raw, line.tcb_layout)
        fmc = t.fmc if line.tcb_layout is TcbLayout.FAMILY_1AH else None
        out.append((AmdVcek(line.name, report.chip_id[: line.hwid_len], t.bl, t.tee, t.snp, t.ucode, fmc),
                    AmdCertChain(line.name), AmdCrl(line.name)))
    return tuple(out)
