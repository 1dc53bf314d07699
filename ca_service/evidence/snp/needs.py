"""What an SEV-SNP report (raw, or inside an Azure HCL report) needs from AMD KDS (publication 57230
section 4): the VCEK for its chip id and reported TCB, the product line's ASK+ARK chain and its CRL.

A report v2 has no CPUID fields, so its product line is not known: one alternative per line with the
family 19h TCB layout (KDS answers 404 for the wrong line). A masked chip id names no VCEK: it must
come with the evidence. VLEKs are not published by KDS: a VLEK-signed report is judged by the VLEK and
chain it was sent with (:class:`Sent`), and needs the VLEK CRL of each product line whose ASVK issued a
VLEK among them (``SEV-VLEK-<line>``), which KDS does publish.
"""

from __future__ import annotations

from collections.abc import Sequence

from ca_service.errors import CollateralMissing, EvidenceUnsupported
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.needs import AmdCertChain, AmdCrl, AmdVcek, Need, Sent
from ca_service.evidence.snp.azure import is_hcl_report, parse_hcl_report
from ca_service.evidence.snp.certs import PRODUCT_LINES, ProductLine
from ca_service.evidence.snp.parse import AttestationReport, SigningKey, TcbLayout, TcbVersion, parse_report


def _lines(report: AttestationReport) -> list[ProductLine]:
    if report.cpuid is None:  # report v2: no CPUID; those predate Turin (family 1Ah)
        return [line for line in PRODUCT_LINES.values() if line.tcb_layout is TcbLayout.FAMILY_19H]
    return [line for line in PRODUCT_LINES.values()
            if line.matches_cpuid(report.cpuid.family, report.cpuid.model)]


def vlek_lines(collateral: Sequence[bytes]) -> list[str]:
    """The product lines whose ASVK issued a certificate among ``collateral`` (``SEV-VLEK-<line>``)."""
    from ca_service.evidence.snp.certs import common_name

    names = {common_name(c.issuer) for c in load_collateral(collateral, keep_unparsed_crls=True).certificates}
    return sorted(line for line in PRODUCT_LINES if f"SEV-VLEK-{line}" in names)


def needs(evidence: bytes, collateral: Sequence[bytes] = ()) -> tuple[tuple[Need, ...], ...]:
    """One alternative per candidate product line: (VCEK, cert_chain, CRL); for a VLEK-signed report
    with its VLEK sent, one alternative: (the VLEK as sent, each line's VLEK CRL).

    Raises:
        EvidenceMalformed: the report cannot be parsed.
        CollateralMissing (``evidence.collateral_missing``): VLEK-signed and no VLEK sent, chip id masked,
            or no known line.
        EvidenceUnsupported: SIGNING_KEY names neither VCEK nor VLEK.
    """
    report = parse_report(parse_hcl_report(evidence).snp_report if is_hcl_report(evidence) else evidence)
    if report.signing_key is SigningKey.VLEK:
        if collateral:
            return ((Sent("vlek"), *(AmdCrl(line, "vlek") for line in vlek_lines(collateral))),)
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
