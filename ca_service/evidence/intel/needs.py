"""What an Intel quote (TDX v4/v5, SGX v3) needs from Intel PCS API v4: the TCB Info of its FMSPC,
the QE Identity of its TEE, the CRL of the CA that issued its PCK certificate, and the Root CA CRL.

The FMSPC is read from the PCK certificate's SGX extensions (certification data type 5) and the PCK
CA from its issuer's name; both only pick resources, and the verifier checks them again against the
signed collateral (step 8 of ``verify.py``).
"""

from __future__ import annotations

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported
from ca_service.evidence.intel.parse import TEE_TYPE_TDX, parse_quote
from ca_service.evidence.intel.pck import load_pem_chain, parse_pck_extension
from ca_service.evidence.needs import IntelPckCrl, IntelQeIdentity, IntelRootCaCrl, IntelTcbInfo, Need
from ca_service.evidence.snp.certs import common_name

PCK_CA = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}


def needs(evidence: bytes) -> tuple[Need, ...]:
    """TCB Info, QE Identity, PCK CRL and Root CA CRL for this quote.

    Raises:
        EvidenceMalformed: the quote or its PCK chain cannot be parsed, or the chain is not leaf, CA, root.
        EvidenceUnsupported: the PCK is issued by neither the platform nor the processor CA.
    """
    quote = parse_quote(evidence)
    tee = "tdx" if quote.header.tee_type == TEE_TYPE_TDX else "sgx"
    certs = load_pem_chain(quote.cert_data, "PCK")
    if len(certs) != 3:
        raise EvidenceMalformed("PCK chain must be leaf, PCK CA and root")
    fmspc = parse_pck_extension(certs[0]).fmspc
    ca = PCK_CA.get(common_name(certs[1].subject))
    if ca is None:
        raise EvidenceUnsupported("the PCK certificate is issued by neither the platform nor the processor CA")
    return (IntelTcbInfo(tee, fmspc), IntelQeIdentity(tee), IntelPckCrl(ca), IntelRootCaCrl())
