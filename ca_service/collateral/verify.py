"""Verify one vendor response before it enters the cache, and read what the cache needs from it.

Every item is checked to a pinned root on insert (signatures and chains, the verifiers' own code);
what depends on time (windows) and on the other items (revocation of the signing chains) is checked
again by the evidence verifier every time the item is used. What the URL promised (FMSPC, TEE, CA,
product line, chip and TCB) must be what the signed content says: a response cannot be filed under
another key than its own.

Intel (PCS API v4, and the QVL steps of ``evidence/intel/collateral.py``):
  TCB Info / QE Identity: body ``{"tcbInfo"|"enclaveIdentity": <signed bytes>, "signature": "<hex>"}``;
  the issuer chain (URL-encoded PEM in a response header) to the pinned root (C2, C3).
  PCK CRL: issuer chain header to the pinned root, CRL signed by the chain's leaf (C4).
  Root CA CRL: signed by the pinned Intel SGX Root CA (C1).
AMD (KDS, 57230; ``evidence/snp/chain.py``):
  cert_chain: ARK pinned and self-signed, ASK/ASVK signed by it, names of the URL's product line.
  CRL: signed by that ARK (RSASSA-PSS SHA-384). VCEK: chain to the ARK, hwID and SPLs of the URL.
NVIDIA (OCSP, ``evidence/nvidia/ocsp_answer.py``):
  an answer for the URL's CertID, signed by the issuer or its designated responder, good or revoked,
  with a nextUpdate. An OCSP answer cannot be checked without its issuer, which is not in the answer:
  the issuer chain it was asked for (from the evidence's device chain, root first) is verified to the
  pinned NVIDIA root and kept with the item in the header ``X-Ca-Service-Issuer-Chain`` (PEM,
  URL-encoded; ca-service's own, NVIDIA serves no such header), so a refresh, an export and an import
  check it again the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service import boundedjson
from ca_service.collateral.endpoints import Endpoint, Kind
from ca_service.collateral.errors import FetchFailed
from ca_service.collateral.fetchers import Response
from ca_service.collateral.intel_root import intel_roots
from ca_service.crypto.certs import is_ca
from ca_service.errors import ChainInvalid, CollateralInvalid, CollateralMismatch, EvidenceError, RootUntrusted
from ca_service.evidence.intel.collateral import Crl, load_verified_crl, verify_raw_signature
from ca_service.evidence.intel.pck import load_pem_chain, verify_chain
from ca_service.evidence.intel.tcb import parse_qe_identity, parse_tcb_info
from ca_service.evidence.nvidia.ocsp_answer import check_answer, verify_issuer_chain
from ca_service.evidence.snp.certs import PRODUCT_LINES, common_name, parse_vek
from ca_service.evidence.snp.chain import build_chain, verify_pss
from ca_service.evidence.snp.parse import SigningKey
from ca_service.evidence.trust import TrustRoots, is_pinned

TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain")
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
NVIDIA_ISSUER_CHAIN_HEADER = "X-Ca-Service-Issuer-Chain"
_PCK_CA_CN = {"platform": "Intel SGX PCK Platform CA", "processor": "Intel SGX PCK Processor CA"}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


@dataclass(frozen=True)
class VerifiedItem:
    """A vendor response whose content verified, ready for the cache."""

    kind: Kind
    key: str
    url: str
    body: bytes
    headers: dict[str, str]  # only what verification needs again (issuer chains), URL-encoded as served
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int | None
    fetched_at: datetime
    sha256: str


def top_level_spans(body: bytes) -> dict[str, bytes]:
    """The exact bytes of each top-level member value of a JSON object, as served.

    Intel signs the bytes of the ``tcbInfo`` / ``enclaveIdentity`` value; re-serialising breaks the
    signature, so the value is cut out of the body, never rebuilt.

    Raises:
        CollateralInvalid: not one JSON object, or a member name given twice.
    """
    try:
        if boundedjson.nesting_depth_exceeds(body):
            raise ValueError("nested too deep")
        text = body.decode("utf-8")
        dec = json.JSONDecoder()
        ws = " \t\r\n"
        i = len(text) - len(text.lstrip(ws))
        if text[i : i + 1] != "{":
            raise ValueError("not an object")
        i += 1
        out: dict[str, bytes] = {}
        while True:
            while text[i] in ws:
                i += 1
            if text[i] == "}" and not out:
                i += 1
                break
            name, i = dec.raw_decode(text, i)
            if not isinstance(name, str) or name in out:
                raise ValueError("bad or repeated member name")
            while text[i] in ws:
                i += 1
            if text[i] != ":":
                raise ValueError("':' expected")
            i += 1
            while text[i] in ws:
                i += 1
            start = i
            _, i = dec.raw_decode(text, i)
            out[name] = text[start:i].encode()
            while text[i] in ws:
                i += 1
            if text[i] == ",":
                i += 1
                continue
            if text[i] == "}":
                i += 1
                break
            raise ValueError("',' or '}' expected")
        if text[i:].strip(ws):
            raise ValueError("trailing data")
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CollateralInvalid("collateral body is not one JSON object") from exc
    return out


def _header(resp: Response, names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        value = resp.header(name)
        if value is not None:
            return name, value
    raise CollateralInvalid(f"response has no {names[0]} header", item=resp.url)


def _intel_chain(pem: str, roots: TrustRoots, what: str) -> x509.Certificate:
    """The verified signing certificate of an Intel issuer chain (leaf first, pinned root last)."""
    try:
        return verify_chain(load_pem_chain(pem.encode(), what), roots.intel, what).leaf
    except ChainInvalid as exc:
        raise CollateralInvalid(f"{what} issuer chain does not verify") from exc


def _signed_json(resp: Response, member: str, roots: TrustRoots, headers: tuple[str, ...],
                 what: str) -> tuple[bytes, dict[str, str], Any]:
    spans = top_level_spans(resp.body)
    if set(spans) != {member, "signature"}:
        raise CollateralInvalid(f"{what} body is not {{{member}, signature}}")
    signed = spans[member]
    sig = json.loads(spans["signature"])
    if not isinstance(sig, str):
        raise CollateralInvalid(f"{what} signature is not a hex string")
    name, chain_header = _header(resp, headers)
    leaf = _intel_chain(unquote(chain_header), roots, what)
    verify_raw_signature(leaf, sig, signed, what)
    try:
        doc = json.loads(signed)
    except ValueError as exc:
        raise CollateralInvalid(f"{what} is not JSON") from exc
    return signed, {name: chain_header}, doc


def crl_der(body: bytes, what: str) -> bytes:
    """A CRL body as DER (PCS serves PEM unless asked for ``encoding=der``).

    Raises:
        CollateralInvalid: neither a PEM nor a DER CRL.
    """
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(body).public_bytes(Encoding.DER)
        x509.load_der_x509_crl(body)
    except ValueError as exc:
        raise CollateralInvalid(f"{what} cannot be parsed") from exc
    return body


def _item(ep: Endpoint, resp: Response, headers: dict[str, str], issue: datetime | None, nxt: datetime | None,
          tcb_eval: int | None) -> VerifiedItem:
    if issue is None or nxt is None:
        raise CollateralInvalid(f"{ep.kind.value} has no validity window", item=resp.url)
    return VerifiedItem(ep.kind, ep.key, ep.url, resp.body, headers, issue, nxt, tcb_eval, resp.fetched_at,
                        hashlib.sha256(resp.body).hexdigest())


def _intel(ep: Endpoint, resp: Response, roots: TrustRoots) -> VerifiedItem:
    if ep.kind in (Kind.TDX_TCB_INFO, Kind.SGX_TCB_INFO):
        _, headers, doc = _signed_json(resp, "tcbInfo", roots, TCB_INFO_CHAIN_HEADERS, "TCB Info")
        info = parse_tcb_info(doc)
        want = "TDX" if ep.kind is Kind.TDX_TCB_INFO else "SGX"
        if info.id != want or info.fmspc.hex() != ep.key:
            raise CollateralMismatch(f"TCB Info is for {info.id} FMSPC {info.fmspc.hex()}, not {want} {ep.key}")
        return _item(ep, resp, headers, info.issue_date, info.next_update, info.tcb_evaluation_data_number)
    if ep.kind in (Kind.TDX_QE_IDENTITY, Kind.SGX_QE_IDENTITY):
        _, headers, doc = _signed_json(resp, "enclaveIdentity", roots, QE_IDENTITY_CHAIN_HEADERS, "QE Identity")
        qe = parse_qe_identity(doc)
        if qe.id != ep.key:
            raise CollateralMismatch(f"QE Identity is for {qe.id}, not {ep.key}")
        return _item(ep, resp, headers, qe.issue_date, qe.next_update, qe.tcb_evaluation_data_number)
    if ep.kind is Kind.PCK_CRL:
        name, chain_header = _header(resp, PCK_CRL_CHAIN_HEADERS)
        leaf = _intel_chain(unquote(chain_header), roots, "PCK CRL")
        if common_name(leaf.subject) != _PCK_CA_CN[ep.key]:
            raise CollateralMismatch(f"PCK CRL is issued by {common_name(leaf.subject)!r}, not the {ep.key} CA")
        crl = load_verified_crl(crl_der(resp.body, "PCK CRL"), leaf, "PCK CRL")
        return _item(ep, resp, {name: chain_header}, crl.this_update, crl.next_update, None)
    if ep.kind is Kind.ROOT_CA_CRL:
        crl = _root_ca_crl(crl_der(resp.body, "Root CA CRL"), roots)
        return _item(ep, resp, {}, crl.this_update, crl.next_update, None)
    raise CollateralInvalid(f"not an Intel collateral kind: {ep.kind.value}")


def _root_ca_crl(der: bytes, roots: TrustRoots) -> Crl:
    """(C1) The Root CA CRL comes with no issuer chain: it must be signed by a pinned Intel root whose
    certificate is known (the Intel SGX Root CA, or a test root pinned with its certificate)."""
    *others, last = intel_roots(roots)
    for root in others:
        try:
            return load_verified_crl(der, root, "Root CA CRL")
        except CollateralInvalid:
            continue
    return load_verified_crl(der, last, "Root CA CRL")


def load_amd_chain(body: bytes, ep_kind: Kind, product: str, roots: TrustRoots) -> tuple[x509.Certificate, ...]:
    """KDS cert_chain: the ASK (VCEK chains) or ASVK (VLEK chains) then the ARK, verified to a pin.

    Raises:
        CollateralInvalid, CollateralMismatch, RootUntrusted, ChainInvalid (``evidence.*``).
    """
    try:
        certs = tuple(x509.load_pem_x509_certificates(body))
    except ValueError as exc:
        raise CollateralInvalid("AMD cert_chain is not PEM certificates") from exc
    line = PRODUCT_LINES[product]
    want_inter = line.intermediate_cn(SigningKey.VLEK if ep_kind in (Kind.VLEK_CHAIN, Kind.VLEK_CRL) else
                                      SigningKey.VCEK)
    names = sorted(common_name(c.subject) for c in certs)
    if names != sorted([want_inter, line.ark_cn]):
        raise CollateralMismatch(f"AMD cert_chain holds {names}, not {want_inter} and {line.ark_cn}")
    ark = next(c for c in certs if common_name(c.subject) == line.ark_cn)
    inter = next(c for c in certs if common_name(c.subject) == want_inter)
    # chain.py step 1: the root is trusted through its pin only, before any signature work.
    if not is_pinned(ark, roots.amd):
        raise RootUntrusted(f"{line.ark_cn} is not a pinned AMD root")
    verify_pss(ark, ark, "ARK self-signature")
    verify_pss(ark, inter, f"{want_inter} signed by {line.ark_cn}")
    if not (is_ca(ark) and is_ca(inter)):
        raise ChainInvalid("AMD cert_chain certificates are not CA certificates")
    return certs


def _amd(ep: Endpoint, resp: Response, roots: TrustRoots, chains: Iterable[bytes]) -> VerifiedItem:
    product = ep.key.split("/", 1)[0]
    if ep.kind in (Kind.VCEK_CHAIN, Kind.VLEK_CHAIN):
        certs = load_amd_chain(resp.body, ep.kind, product, roots)
        return _item(ep, resp, {}, max(c.not_valid_before_utc for c in certs),
                     min(c.not_valid_after_utc for c in certs), None)
    # CRLs and VCEKs are checked against a cert_chain already verified (this import, or the cache).
    chain_kind = Kind.VLEK_CHAIN if ep.kind is Kind.VLEK_CRL else Kind.VCEK_CHAIN
    known: list[x509.Certificate] = []
    for body in chains:
        known.extend(load_amd_chain(body, chain_kind, product, roots))
    if not known:
        raise CollateralInvalid(f"no verified {product} cert_chain to check {ep.kind.value} against", item=ep.url)
    if ep.kind in (Kind.VCEK_CRL, Kind.VLEK_CRL):
        return _amd_crl(ep, resp, product, known)
    if ep.kind is Kind.VCEK:
        try:
            cert = x509.load_der_x509_certificate(resp.body)
        except ValueError as exc:
            raise CollateralInvalid("VCEK is not a DER certificate") from exc
        vek = parse_vek(cert)
        line = PRODUCT_LINES[product]
        _, hwid_hex, tcb_key = ep.key.split("/")
        got_tcb = ".".join(str(v) for v in [vek.bl, vek.tee, vek.snp, vek.ucode] + (
            [vek.fmc] if line.name == "Turin" and vek.fmc is not None else []))
        if vek.key_type is not SigningKey.VCEK or vek.product_line_name != product:
            raise CollateralMismatch(
                f"certificate is a {vek.key_type.name} for {vek.product_name}, not a {product} VCEK")
        if (vek.hwid or b"").hex() != hwid_hex or got_tcb != tcb_key:
            raise CollateralMismatch("VCEK hwID or SPLs are not those the URL asked for")
        build_chain(cert, tuple(known), roots.amd)
        return _item(ep, resp, {}, cert.not_valid_before_utc, cert.not_valid_after_utc, None)
    raise CollateralInvalid(f"not an AMD collateral kind: {ep.kind.value}")


def _amd_crl(ep: Endpoint, resp: Response, product: str, known: list[x509.Certificate]) -> VerifiedItem:
    line = PRODUCT_LINES[product]
    arks = [c for c in known if common_name(c.subject) == line.ark_cn]
    try:
        crl = x509.load_der_x509_crl(resp.body)
        algorithm, issuer = crl.signature_algorithm_oid, crl.issuer
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
    except Exception as exc:  # noqa: BLE001 - pyca parses lazily: a mangled field surfaces on access, any type
        raise CollateralInvalid("AMD CRL is not DER") from exc
    if next_update is None:
        raise CollateralInvalid("AMD CRL has no nextUpdate")
    if algorithm != x509.oid.SignatureAlgorithmOID.RSASSA_PSS:
        raise CollateralInvalid("AMD CRL is not signed with RSASSA-PSS")
    for ark in arks:
        key = ark.public_key()
        if issuer != ark.subject or not isinstance(key, rsa.RSAPublicKey):
            continue
        try:
            key.verify(crl.signature, crl.tbs_certlist_bytes, _PSS, hashes.SHA384())
        except InvalidSignature:
            continue
        return _item(ep, resp, {}, this_update, next_update, None)
    raise CollateralInvalid(f"AMD CRL is not signed by {line.ark_cn}", item=ep.url)


def issuer_chain_der(ep: Endpoint, resp: Response) -> tuple[bytes, ...]:
    """The issuer chain an NVIDIA OCSP answer is checked with: the endpoint's (asked for from evidence),
    else the one recorded with the response (a cached row, a bundle item).

    Raises:
        CollateralInvalid: neither, or a recorded one that is not PEM certificates.
    """
    if ep.issuer_chain:
        return ep.issuer_chain
    recorded = resp.header(NVIDIA_ISSUER_CHAIN_HEADER)
    if recorded is None:
        raise CollateralInvalid("an NVIDIA OCSP answer is kept only with the issuer chain it was asked for",
                                item=resp.url)
    try:
        return tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(unquote(recorded).encode()))
    except ValueError as exc:
        raise CollateralInvalid("the recorded issuer chain of an NVIDIA OCSP answer is not PEM") from exc


def _nvidia(ep: Endpoint, resp: Response, roots: TrustRoots) -> VerifiedItem:
    chain = issuer_chain_der(ep, resp)
    issuer = verify_issuer_chain(chain, roots.nvidia_device)
    q = _ocsp_request(ep)
    answer = check_answer(resp.body, issuer, *q)
    pem = b"".join(x509.load_der_x509_certificate(c).public_bytes(Encoding.PEM) for c in chain).decode()
    return _item(ep, resp, {NVIDIA_ISSUER_CHAIN_HEADER: quote(pem, safe="")}, answer.this_update,
                 answer.next_update, None)


def _ocsp_request(ep: Endpoint) -> tuple[bytes, bytes, int]:
    """(issuerNameHash, issuerKeyHash, serial) of the endpoint's OCSP request."""
    if ep.post_body is None:
        raise CollateralInvalid(f"{ep.url} is not an OCSP request")
    req = ocsp.load_der_ocsp_request(ep.post_body)
    return req.issuer_name_hash, req.issuer_key_hash, req.serial_number


def verify_response(ep: Endpoint, resp: Response, roots: TrustRoots, amd_chains: Iterable[bytes] = ()) -> VerifiedItem:
    """Verify one 200 response for ``ep``.

    ``amd_chains`` are KDS cert_chain bodies already accepted for the same product line (a VCEK or
    CRL is checked against them; they are verified again here, cheaply, from the verifier's cache).

    Raises:
        FetchFailed (``collateral.fetch_failed``): not a 200 response.
        EvidenceError leaves (``evidence.collateral_invalid``, ``evidence.collateral_mismatch``,
            ``evidence.root_untrusted``, ``evidence.chain_invalid``...), with the URL in ``fields``.
    """
    if resp.status != 200:
        raise FetchFailed(f"GET {ep.url} answered {resp.status}", url=ep.url, status=resp.status)
    try:
        if ep.kind.value.startswith("intel."):
            return _intel(ep, resp, roots)
        if ep.kind is Kind.NVIDIA_OCSP:
            return _nvidia(ep, resp, roots)
        return _amd(ep, resp, roots, amd_chains)
    except EvidenceError as exc:
        exc.fields.setdefault("url", ep.url)
        raise
