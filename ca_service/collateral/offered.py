"""Collateral a requester sends with its evidence, turned into the vendor responses it claims to be.

The CA judges by its own collateral (docs/adr/0005-the-cas-collateral-decides.md). What a requester
sends may only fill what the CA lacks, so each item is mapped to the allowlisted endpoint it would
have come from, as a :class:`~ca_service.collateral.fetchers.Response`; the caller then verifies it
exactly like a vendor response (``collateral/verify.py``: pinned roots, the URL's key must be the
signed content's) and files it in the cache under the cache's rollback rule. The endpoint is derived
from the signed content only (FMSPC and TEE of a TCB Info, the CA of a PCK CRL's issuer chain, the
product line, hwID and SPLs of a VCEK): a forged key is refused by that verification.

Intel: a ``QuoteCollateralV3`` JSON document -> TCB Info, QE Identity, PCK CRL, Root CA CRL.
AMD: certificates and CRLs (PEM or DER, any grouping) -> cert_chain (ASK/ASVK + ARK), CRL, VCEK.
NVIDIA: DER OCSP answers -> the OCSP endpoint of the device certificate their CertID names.
Items that map to no endpoint are not used (the verifier only ever sees what the CA assembled).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service import boundedjson
from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import AmdTcb, Endpoint
from ca_service.collateral.errors import CollateralError, UrlNotAllowed
from ca_service.collateral.fetchers import Response
from ca_service.errors import (
    AmdCrlBadSignature,
    AmdCrlInvalid,
    CollateralInvalid,
    EvidenceError,
    IntelPckCrlBadSignature,
    IntelPckCrlInvalid,
    IntelRootCaCrlInvalid,
    RevocationUnchecked,
)
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.snp.certs import common_name, parse_vek
from ca_service.evidence.snp.parse import SigningKey

_PCK_CA = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}
_V3 = ("tcb_info", "tcb_info_signature", "tcb_info_issuer_chain", "qe_identity", "qe_identity_signature",
       "qe_identity_issuer_chain")


def _resp(ep: Endpoint, body: bytes, headers: dict[str, str], now: datetime) -> tuple[Endpoint, Response]:
    return ep, Response(ep.url, 200, headers, body, now)


def _intel(doc: bytes, now: datetime) -> list[tuple[Endpoint, Response]]:
    try:
        obj = boundedjson.loads(doc)  # nested [[[[ or {"a":{"a":... is a refusal, not a RecursionError
        fields = {f: obj[f] for f in _V3}
        if not all(isinstance(v, str) for v in fields.values()):
            raise TypeError("a field is not a string")
        tcb, qe = boundedjson.loads(fields["tcb_info"]), boundedjson.loads(fields["qe_identity"])
        tee = "tdx" if tcb["id"] == "TDX" else "sgx"
        fmspc = bytes.fromhex(tcb["fmspc"])
        qe_tee = "tdx" if qe["id"] == "TD_QE" else "sgx"
        tcb_ep, qe_ep = endpoints.tcb_info(tee, fmspc), endpoints.qe_identity(qe_tee)
        crls = {f: obj.get(f) or "" for f in ("pck_crl", "pck_crl_issuer_chain", "root_ca_crl")}
        if not all(isinstance(v, str) for v in crls.values()):
            raise TypeError("a CRL field is not a string")
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, CollateralError) as exc:
        raise CollateralInvalid("the request's Intel collateral is not a usable QuoteCollateralV3 document",
                                item="intel.collateral") from exc

    def signed(member: str, text: str, sig: str) -> bytes:
        return b'{"' + member.encode() + b'":' + text.encode() + b',"signature":' + json.dumps(sig).encode() + b"}"

    out = [
        _resp(tcb_ep, signed("tcbInfo", fields["tcb_info"], fields["tcb_info_signature"]),
              {"TCB-Info-Issuer-Chain": quote(fields["tcb_info_issuer_chain"], safe="")}, now),
        _resp(qe_ep, signed("enclaveIdentity", fields["qe_identity"], fields["qe_identity_signature"]),
              {"SGX-Enclave-Identity-Issuer-Chain": quote(fields["qe_identity_issuer_chain"], safe="")}, now),
    ]
    # The CRLs may be left out (the CA's own fill in); one that is sent must be usable, and a refusal
    # names it (revocation.intel_pck_crl_<state>, revocation.intel_root_ca_crl_<state>).
    if crls["pck_crl"]:
        try:
            pck_leaf = x509.load_pem_x509_certificates(crls["pck_crl_issuer_chain"].encode())[0]
            pck_ep = endpoints.pck_crl(_PCK_CA[common_name(pck_leaf.subject)])
        except (ValueError, KeyError, IndexError, UnicodeDecodeError, CollateralError) as exc:
            raise IntelPckCrlBadSignature("the PCK CRL in the request's collateral has no usable issuer chain",
                                          item="intel_pck_crl", state="bad_signature") from exc
        out.append(_resp(pck_ep, _crl_hex(crls["pck_crl"], IntelPckCrlInvalid),
                         {"SGX-PCK-CRL-Issuer-Chain": quote(crls["pck_crl_issuer_chain"], safe="")}, now))
    if crls["root_ca_crl"]:
        out.append(_resp(endpoints.root_ca_crl(), _crl_hex(crls["root_ca_crl"], IntelRootCaCrlInvalid), {}, now))
    return out


def _crl_hex(value: str, refusal: type[RevocationUnchecked]) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise refusal(f"the {refusal.item} in the request's collateral is not hex", item=refusal.item,
                      state="invalid") from exc


def _amd(items: Iterable[bytes], now: datetime) -> tuple[list[tuple[Endpoint, Response]], list[x509.Certificate]]:
    """(endpoint, response) pairs, cert_chain first; and VLEKs, which KDS does not publish (no endpoint)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD's non-positive serials (vectors README)
        coll = load_collateral(items, keep_unparsed_crls=True)
    if coll.unparsed_crls:
        raise AmdCrlInvalid(f"{len(coll.unparsed_crls)} CRL(s) in the request's collateral cannot be parsed",
                            item="amd_crl", state="invalid")
    certs, out, vleks = list(coll.certificates), [], []
    arks = {common_name(c.subject): c for c in certs
            if c.subject == c.issuer and common_name(c.subject).startswith("ARK-")}
    signer_of: dict[str, str] = {}
    for inter in certs:
        name, issuer = common_name(inter.subject), common_name(inter.issuer)
        if inter.subject == inter.issuer or issuer not in arks or not name.startswith("SEV-"):
            continue
        product = issuer.removeprefix("ARK-")
        signer = "vlek" if name.startswith("SEV-VLEK-") else "vcek"
        signer_of.setdefault(product, signer)
        try:
            ep = endpoints.amd_cert_chain(product, signer)
        except CollateralError:  # a product line we do not know: not an AMD chain we can use
            continue
        body = inter.public_bytes(Encoding.PEM) + arks[issuer].public_bytes(Encoding.PEM)
        out.append(_resp(ep, body, {}, now))
    for crl in coll.crls:
        # A CRL sent with SNP evidence is an AMD ARK's: one that names no known ARK is refused, never
        # left out (a corrupted CRL must not turn into "no CRL sent").
        try:
            issuer = common_name(crl.issuer)
            body = crl.public_bytes(Encoding.DER)
        except Exception as exc:  # noqa: BLE001 - pyca parses lazily: a mangled field surfaces on access
            raise AmdCrlInvalid("a CRL in the request's collateral cannot be parsed",
                                item="amd_crl", state="invalid") from exc
        product = issuer.removeprefix("ARK-")
        try:
            if not issuer.startswith("ARK-"):
                raise UrlNotAllowed(f"CRL issuer {issuer!r} is not an AMD ARK")
            ep = endpoints.amd_crl(product, signer_of.get(product, "vcek"))
        except CollateralError as exc:  # unknown product line
            raise AmdCrlBadSignature(f"a CRL in the request's collateral is issued by {issuer!r}, not by an AMD ARK",
                                     item="amd_crl", state="bad_signature") from exc
        out.append(_resp(ep, body, {}, now))
    for cert in certs:
        if not common_name(cert.issuer).startswith("SEV-"):
            continue
        try:
            vek = parse_vek(cert)
        except EvidenceError:
            continue
        if vek.key_type is SigningKey.VLEK:
            vleks.append(cert)
            continue
        if vek.hwid is None:
            continue
        tcb = AmdTcb(vek.bl, vek.tee, vek.snp, vek.ucode, vek.fmc if vek.product_line_name == "Turin" else None)
        try:
            ep = endpoints.vcek(vek.product_line_name, vek.hwid, tcb)
        except CollateralError:  # unknown product line or SPL out of range
            continue
        out.append(_resp(ep, cert.public_bytes(Encoding.DER), {}, now))
    return out, vleks


def offered_responses(kind: str, items: Iterable[bytes], now: datetime) -> tuple[list[tuple[Endpoint, Response]],
                                                                                list[x509.Certificate]]:
    """The request's collateral for ``kind`` as vendor responses (not yet verified), and any VLEKs.

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): an item that cannot be parsed.
    """
    items = list(items)
    if kind in ("tdx-quote", "sgx-quote"):
        docs = [i for i in items if i.lstrip()[:1] == b"{"]
        return [pair for doc in docs for pair in _intel(doc, now)], []
    if kind == "snp-report":
        return _amd(items, now)
    return [], []


def nvidia_ocsp_responses(eps: Iterable[Endpoint], items: Iterable[bytes], now: datetime
                          ) -> tuple[list[tuple[Endpoint, Response]], list[bytes]]:
    """The request's OCSP answers for the device chain's endpoints (``endpoints.nvidia_ocsp``, each with
    its issuer chain), matched by CertID under whatever hash the answer uses; and every other item
    (the device chain, RIMs, answers that name none of these certificates or do not parse), which go to
    the verifier as sent.
    """
    from ca_service.evidence.nvidia.ocsp_answer import cert_id

    by_id: dict[tuple[str, bytes, bytes, int], Endpoint] = {}
    for ep in eps:
        if ep.post_body is None or not ep.issuer_chain:
            continue
        issuer = x509.load_der_x509_certificate(ep.issuer_chain[-1])
        serial = ocsp.load_der_ocsp_request(ep.post_body).serial_number
        for alg in ("sha1", "sha256", "sha384", "sha512"):
            by_id[(alg, *cert_id(issuer, alg), serial)] = ep
    pairs: list[tuple[Endpoint, Response]] = []
    rest: list[bytes] = []
    for item in items:
        match = None
        try:
            resp = ocsp.load_der_ocsp_response(item)
            if resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
                for single in resp.responses:
                    key = (single.hash_algorithm.name, single.issuer_name_hash, single.issuer_key_hash,
                           single.serial_number)
                    match = match or by_id.get(key)
        except Exception:  # noqa: BLE001 - pyca parses lazily: an item that is no readable answer goes as sent
            match = None
        if match is None:
            rest.append(item)
        else:
            pairs.append(_resp(match, item, {}, now))
    return pairs, rest
