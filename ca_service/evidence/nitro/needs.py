"""What an AWS Nitro Enclaves attestation document needs from outside (PURE): nothing.

The AWS Nitro Enclaves Root-G1 is pinned (``evidence/trust.py``), and the document carries the rest of
its chain (``cabundle``, then ``certificate``), signed over by the COSE signature (``verify.py``). AWS
publishes CRLs for the intermediates online only; they are not fetched (the check ``nitro.revocation``
is shown as skipped). So a Nitro item has one alternative with no resource in it, and the CA keeps
no Nitro collateral. What a judgement of it expires with is the chain's own: the attestation
certificate's notAfter and the cabundle's earliest (``VerifiedEvidence.expires_at``).
"""

from __future__ import annotations

from ca_service.evidence.needs import Need
from ca_service.evidence.nitro.parse import parse_evidence


def needs(evidence: bytes) -> tuple[Need, ...]:
    """No resource: the root is pinned and the chain is in the document.

    Raises:
        EvidenceMalformed / EvidenceUnsupported: not a COSE_Sign1 attestation document.
    """
    parse_evidence(evidence)
    return ()
