"""What each verifier is given, made from the cached rows the CA picked for a family's needs.

The cache keeps vendor responses as served (``store.py``); a verifier takes collateral in its own
shape (``evidence/collateral_items.py``). This is the one place that turns one into the other:

- Intel (tdx-quote, sgx-quote): one ``QuoteCollateralV3`` JSON document (dcap-qvl's shape, which
  ``evidence/intel/collateral.py`` verifies, steps C1-C6): TCB Info and QE Identity as the signed
  bytes cut out of the served body, their issuer chains from the response headers, the CRLs as hex DER.
  A CRL the CA could not get is left empty: the verifier reports it missing.
- AMD (snp-report): the VCEK (DER), the cert_chain (ASK + ARK, PEM) and the CRL (DER), when held.
- NVIDIA OCSP answers and AMD VLEK CRLs beside what a request sent: each body as DER.

The document is deterministic (sorted keys, no spaces): the same rows give the same bytes, so the
verifier's own cache of checked collateral hits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import unquote

from ca_service.collateral.verify import crl_der, top_level_spans
from ca_service.db.models.collateral import CollateralItem
from ca_service.errors import CollateralMissing
from ca_service.evidence import needs

Picked = Sequence[tuple[needs.Need, CollateralItem | None]]


def _header_pem(row: CollateralItem) -> str:
    values = list(row.headers.values())
    if len(values) != 1:
        raise CollateralMissing(f"cached {row.kind} has no issuer chain", url=row.url)
    return unquote(values[0])


def _signed_member(row: CollateralItem, member: str) -> tuple[str, str]:
    spans = top_level_spans(row.body)
    signature = json.loads(spans["signature"])
    return spans[member].decode(), str(signature)


def _row(picked: Picked, need_type: type) -> CollateralItem | None:
    return next((row for need, row in picked if isinstance(need, need_type)), None)


def _required(picked: Picked, need_type: type) -> CollateralItem:
    row = _row(picked, need_type)
    if row is None:
        raise CollateralMissing(f"no cached {need_type.__name__}")
    return row


def intel_document(picked: Picked) -> bytes:
    """The ``QuoteCollateralV3`` document of an Intel quote's picked rows.

    Raises:
        CollateralMissing: TCB Info or QE Identity missing, or a cached row without its issuer chain.
    """
    tcb, qe = _required(picked, needs.IntelTcbInfo), _required(picked, needs.IntelQeIdentity)
    pck_crl, root_crl = _row(picked, needs.IntelPckCrl), _row(picked, needs.IntelRootCaCrl)
    tcb_info, tcb_sig = _signed_member(tcb, "tcbInfo")
    qe_identity, qe_sig = _signed_member(qe, "enclaveIdentity")
    doc = {
        "pck_crl_issuer_chain": _header_pem(pck_crl) if pck_crl is not None else "",
        "root_ca_crl": crl_der(root_crl.body, "Root CA CRL").hex() if root_crl is not None else "",
        "pck_crl": crl_der(pck_crl.body, "PCK CRL").hex() if pck_crl is not None else "",
        "tcb_info_issuer_chain": _header_pem(tcb),
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig,
        "qe_identity_issuer_chain": _header_pem(qe),
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def snp_items(picked: Picked) -> tuple[bytes, ...]:
    """VCEK, cert_chain and (when held) the CRL of an SNP report's picked rows.

    Raises:
        CollateralMissing: the VCEK or the cert_chain missing.
    """
    vcek, chain = _required(picked, needs.AmdVcek), _required(picked, needs.AmdCertChain)
    crl = _row(picked, needs.AmdCrl)
    return (vcek.body, chain.body) + ((crl_der(crl.body, "AMD CRL"),) if crl is not None else ())


def verifier_items(kind: str, picked: Picked) -> tuple[bytes, ...]:
    """The collateral items the verifier of ``kind`` takes, from the rows picked for its needs.

    Raises:
        CollateralMissing: a required row is missing; EvidenceUnsupported for a kind without a cache.
    """
    if kind in ("tdx-quote", "sgx-quote"):
        return (intel_document(picked),)
    if kind == "snp-report":
        return snp_items(picked)
    return tuple(crl_der(row.body, row.kind) if isinstance(need, needs.AmdCrl) else row.body
                 for need, row in picked if row is not None)
