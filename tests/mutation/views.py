"""What each vector file commits to under a signature, read independently of the verifiers.

A mutation the verifier *accepts* is benign only if the signed content is unchanged: the mutated
byte was padding, PEM armour or whitespace, JSON layout, an unsigned header. These readers decide
that claim without trusting ``ca_service``'s parsers: each returns a comparable value holding every
signed byte and every signature of the file (or ``None`` when the bytes cannot be read as the
format at all), so ``view(mutated) == view(original)`` means no signed byte changed.

Formats, with the section that says what is signed:
- Intel quote v3/v4/v5 (Intel DCAP "Quote Format", ECDSA quote v4 appendix A): header + body signed
  by the attestation key; the attestation key and QE auth data bound by the QE report's report
  data; the QE report signed by the PCK key; the PCK chain.
- Intel QuoteCollateralV3 JSON (dcap-qvl): the tcbInfo / enclaveIdentity strings verbatim, their
  signatures, the CRLs and issuer chains (as DER).
- SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP ABI, Table 23): bytes 0x000..0x29F signed; R and S as
  integers (72-byte little-endian fields, zero-extended).
- Azure HCL report: the embedded SNP report and the runtime data its REPORT_DATA hashes.
- X.509 certificates and CRLs (RFC 5280): the TBS bytes (with the signed copy of the signature
  algorithm), the outer signature algorithm's OID and the signature value.
- NVIDIA SPDM GET_MEASUREMENTS request + response (DSP0274 section 10.11): everything up to the
  signature, and the signature; bytes after it are unsigned.
- NVIDIA RIM SWID tags (XMLDSig enveloped, section 6.6.4): the canonical form (C14N 1.0, with
  comments) of the document without its Signature, the canonical SignedInfo, the signature value
  and the KeyInfo certificates (base64 decoded).
- TDX event logs (CCEL, dstack JSON; docs/event-log.md): not signed but bound by replay to the
  quote's RTMRs: the (register, SHA-384 digest) pairs of the extended records.
- COSE_Sign1 (RFC 9052 section 4.2): protected header, payload and signature; the unprotected
  header is unsigned.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Callable
from typing import Any

import cbor2
from cryptography import x509
from lxml import etree

View = Any


def _x509_cert(c: x509.Certificate) -> tuple[bytes, str, bytes]:
    return c.tbs_certificate_bytes, c.signature_algorithm_oid.dotted_string, c.signature


def _x509_crl(c: x509.CertificateRevocationList) -> tuple[bytes, str, bytes]:
    return c.tbs_certlist_bytes, c.signature_algorithm_oid.dotted_string, c.signature


def pem_certs(data: bytes) -> View:
    return tuple(_x509_cert(c) for c in x509.load_pem_x509_certificates(data))


def der_cert(data: bytes) -> View:
    return _x509_cert(x509.load_der_x509_certificate(data))


def der_crl(data: bytes) -> View:
    return _x509_crl(x509.load_der_x509_crl(data))


def _u16(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


def _u32(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def _take(b: bytes, off: int, n: int) -> bytes:
    if off < 0 or n < 0 or off + n > len(b):
        raise ValueError("past the end")
    return b[off:off + n]


def intel_quote(q: bytes) -> View:
    version, tee_type = _u16(q, 0), _u32(q, 4)
    if version in (3, 4):
        signed_end = 48 + (584 if tee_type == 0x81 else 384)
    elif version == 5:
        signed_end = 54 + _u32(q, 50)
    else:
        raise ValueError("quote version")
    signed = _take(q, 0, signed_end)
    sd = _take(q, signed_end + 4, _u32(q, signed_end))
    sig, attkey = _take(sd, 0, 64), _take(sd, 64, 64)
    if version == 3:
        cd, base, types = sd, 128, ()
    else:
        outer_type = _u16(sd, 128)
        cd, base, types = _take(sd, 134, _u32(sd, 130)), 0, (outer_type,)
    qe_report, qe_sig = _take(cd, base, 384), _take(cd, base + 384, 64)
    auth = _take(cd, base + 450, _u16(cd, base + 448))
    p = base + 450 + len(auth)
    inner_type = _u16(cd, p)
    chain = _take(cd, p + 6, _u32(cd, p + 2))
    return signed, sig, attkey, qe_report, qe_sig, auth, (*types, inner_type), pem_certs(chain)


def intel_collateral(data: bytes) -> View:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    out: list[tuple[str, object]] = []
    for key, value in sorted(obj.items()):
        if key in ("pck_crl", "root_ca_crl"):
            out.append((key, der_crl(bytes.fromhex(value))))
        elif key.endswith("_signature"):
            out.append((key, bytes.fromhex(value)))
        elif key.endswith("_chain"):
            out.append((key, pem_certs(value.encode())))
        else:  # tcb_info, qe_identity: signed verbatim, as the JSON string's value
            out.append((key, value))
    return tuple(out)


def snp_report(r: bytes) -> View:
    if len(r) < 0x4A0:
        raise ValueError("short")
    sig_r = int.from_bytes(r[0x2A0:0x2E8], "little")
    sig_s = int.from_bytes(r[0x2E8:0x330], "little")
    return r[:0x2A0], sig_r, sig_s, r[0x330:0x4A0]


def hcl_report(h: bytes) -> View:
    if h[:4] != b"HCLA":
        raise ValueError("not an HCL report")
    runtime = _take(h, 0x4D4, _u32(h, 0x4C0 + 16))
    return snp_report(_take(h, 0x20, 0x4A0)), runtime


def nvidia_report(r: bytes) -> View:
    resp = r[37:]
    record_len = int.from_bytes(_take(resp, 5, 3), "little")
    opaque_len = _u16(resp, 8 + record_len + 32)
    signed_end = 37 + 8 + record_len + 32 + 2 + opaque_len
    return _take(r, 0, signed_end), _take(r, signed_end, 96)


_DS = "{http://www.w3.org/2000/09/xmldsig#}"


def _b64_lenient(text: str | None) -> bytes:
    # base64 text as XMLDSig reads it (RFC 2045 section 6.8: characters outside the alphabet are ignored)
    return base64.b64decode(re.sub(r"[^A-Za-z0-9+/=]", "", text or ""), validate=True)


def rim_xml(data: bytes) -> View:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.fromstring(data, parser)
    sigs = root.findall(f".//{_DS}Signature")
    if len(sigs) != 1:
        raise ValueError("not one enveloped signature")
    sig = sigs[0]
    signed_info = etree.tostring(sig.find(f"{_DS}SignedInfo"), method="c14n")
    value = _b64_lenient(sig.findtext(f"{_DS}SignatureValue"))
    certs = tuple(der_cert(_b64_lenient(e.text)) for e in sig.iter(f"{_DS}X509Certificate"))
    sig.getparent().remove(sig)  # the enveloped-signature transform (XMLDSig section 6.6.4)
    return etree.tostring(root, method="c14n", with_comments=True), signed_info, value, certs


def cose_sign1(data: bytes) -> View:
    obj = cbor2.loads(data)
    if isinstance(obj, cbor2.CBORTag):
        obj = obj.value
    if not isinstance(obj, list) or len(obj) != 4:
        raise ValueError("not a COSE_Sign1 array")
    return obj[0], obj[2], obj[3]


def ccel(data: bytes) -> View:
    """TCG PC Client crypto-agile log (PFP 10.2.1/10.2.2): what the quote binds is each extended
    (register, SHA-384 digest) pair; EV_NO_ACTION (3) records are never extended. Event data and the
    padding after the log are not measured (claims made from them are compared separately)."""
    size = _u32(data, 28)
    spec = _take(data, 32, size)
    n_algs = _u32(spec, 24)
    sizes = {_u16(spec, 28 + 4 * i): _u16(spec, 30 + 4 * i) for i in range(n_algs)}
    off, out = 32 + size, []
    while off + 12 <= len(data) and data[off:off + 8] not in (b"\xff" * 8, b"\x00" * 8):
        index, etype, count = struct.unpack_from("<III", data, off)
        off += 12
        sha384 = None
        for _ in range(count):
            alg = _u16(data, off)
            digest = _take(data, off + 2, sizes[alg])
            sha384 = digest if alg == 0x000C else sha384
            off += 2 + sizes[alg]
        off += 4 + _u32(data, off)
        if etype != 3:
            out.append((index, sha384))
    if off > len(data):
        raise ValueError("truncated")
    return tuple(out)


def dstack_json(data: bytes) -> View:
    """dstack's JSON event log: the (imr, digest) pairs it extends (digest hex, any case)."""
    events = json.loads(data)
    return tuple((e["imr"], bytes.fromhex(e["digest"])) for e in events)


VIEWS: dict[str, Callable[[bytes], View]] = {
    "ccel": ccel,
    "dstack-json": dstack_json,
    "intel-quote": intel_quote,
    "intel-collateral": intel_collateral,
    "snp-report": snp_report,
    "hcl-report": hcl_report,
    "der-cert": der_cert,
    "der-crl": der_crl,
    "pem-certs": pem_certs,
    "nvidia-report": nvidia_report,
    "rim-xml": rim_xml,
    "cose-sign1": cose_sign1,
}

# What the unsigned bytes of each format are, for the report (the check itself is the comparison).
UNSIGNED = {
    "ccel": "event data, EV_NO_ACTION records or padding: not extended into the RTMRs",
    "dstack-json": "JSON layout or event text not extended into the RTMRs",
    "intel-quote": "bytes after the quote's signature data, or PEM text around the PCK chain's DER",
    "intel-collateral": "JSON layout outside the signed values (whitespace, hex letter case, escapes)",
    "snp-report": "zero-extension of the signature's R/S fields read as the same integers",
    "hcl-report": "the HCL header (unsigned)",
    "der-cert": "the outer signatureAlgorithm's parameters (RSASSA-PSS), which the signature does not cover",
    "der-crl": "the outer signatureAlgorithm's parameters (RSASSA-PSS), which the signature does not cover",
    "pem-certs": "PEM armour and whitespace outside the DER",
    "nvidia-report": "bytes after the SPDM signature (padding)",
    "rim-xml": "XML outside the canonical form, or base64 whitespace in the signature value / KeyInfo",
    "cose-sign1": "the COSE unprotected header, or the CBOR encoding around the signed strings",
}


def signed_view(fmt: str, data: bytes) -> View | None:
    """The signed content of ``data`` read as ``fmt``, or None when it cannot be read as that format."""
    try:
        return VIEWS[fmt](data)
    except Exception:  # any reading failure: not the same signed content
        return None
