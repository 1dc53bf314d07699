"""Flip every byte of the signed parts of real quotes and collateral: each flip is refused, with its code.

Exhaustive, not sampled: the signed region (header + body) and the QE report of one SGX v3, one TDX v4
and one TDX v5 quote; every character of the signed TCB Info / QE Identity JSON and every byte of
their signatures; every byte of the signature of both CRLs.
"""

from __future__ import annotations

import json

import pytest
from cryptography import x509

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.intel.parse import SGX_REPORT_LEN, parse_quote
from tests.vectors.manifest import Vector, vectors_for

ALL = vectors_for("tdx") + vectors_for("sgx")


def _pick(path: str, coll: str = "") -> Vector:
    return next(v for v in ALL if v.path == path and coll in v.files["collateral"])


FLIP_VECTORS = [
    _pick("tdx/dcapqvl-v4-uptodate"),
    _pick("tdx/gotdxguest-v5-uptodate", "collateral-A"),
    _pick("sgx/dcapqvl-v3-config-swhardening"),
]
IDS = [v.path for v in FLIP_VECTORS]


def _code(v: Vector, quote: bytes, collateral: bytes | None = None) -> str | None:
    try:
        verify(f"{v.tee}-quote", quote, collateral=[collateral or v.read("collateral")], at=v.verify_time)
    except EvidenceError as exc:
        return exc.code
    return None


def _header_expect(off: int, version: int) -> set[str]:
    if off < 8 or (version == 5 and 48 <= off < 54):  # version, key type, TEE type, v5 body descriptor
        return {"evidence.unsupported", "evidence.malformed"}
    if 12 <= off < 28:  # QE vendor ID
        return {"evidence.unsupported"}
    return {"evidence.signature_invalid"}


@pytest.mark.parametrize("v", FLIP_VECTORS, ids=IDS)
def test_flip_every_signed_quote_byte(v: Vector) -> None:
    raw = v.read("quote")
    assert _code(v, raw) is None
    q = parse_quote(raw)
    bad = []
    for off in range(q.signed_len):
        m = bytearray(raw)
        m[off] ^= 0x01
        code = _code(v, bytes(m))
        if code not in _header_expect(off, q.header.version):
            bad.append((off, code))
    assert not bad, bad[:10]


@pytest.mark.parametrize("v", FLIP_VECTORS, ids=IDS)
def test_flip_every_qe_report_and_signature_byte(v: Vector) -> None:
    raw = v.read("quote")
    q = parse_quote(raw)
    start = raw.index(q.qe_report.raw)
    regions = [
        (start, SGX_REPORT_LEN + 64),  # QE report and its signature by the PCK key
        (raw.index(q.signature), 64),  # quote signature
        (raw.index(q.attestation_key), 64),  # attestation key (bound by the QE report data)
        (start + SGX_REPORT_LEN + 64 + 2, len(q.qe_auth_data)),  # QE auth data (bound likewise)
    ]
    bad = []
    for first, length in regions:
        for off in range(first, first + length):
            m = bytearray(raw)
            m[off] ^= 0x01
            code = _code(v, bytes(m))
            if code != "evidence.signature_invalid":
                bad.append((off, code))
    assert not bad, bad[:10]


def _mutate_field(doc: dict[str, str], field: str, i: int) -> bytes:
    text = doc[field]
    out = dict(doc)
    out[field] = text[:i] + chr(ord(text[i]) ^ 0x01) + text[i + 1 :]
    return json.dumps(out).encode()


@pytest.mark.parametrize("field", ["tcb_info", "qe_identity", "tcb_info_signature", "qe_identity_signature"])
def test_flip_every_signed_collateral_json_byte(field: str) -> None:
    v = FLIP_VECTORS[0]
    doc = json.loads(v.read("collateral"))
    quote = v.read("quote")
    assert _code(v, quote, json.dumps(doc).encode()) is None
    bad = []
    for i in range(len(doc[field])):
        code = _code(v, quote, _mutate_field(doc, field, i))
        if code != "evidence.collateral_invalid":
            bad.append((i, code))
    assert not bad, bad[:10]


@pytest.mark.parametrize("field", ["pck_crl", "root_ca_crl"])
def test_flip_every_crl_signature_byte(field: str) -> None:
    v = FLIP_VECTORS[0]
    doc = json.loads(v.read("collateral"))
    der = bytes.fromhex(doc[field])
    sig = x509.load_der_x509_crl(der).signature
    start = der.rindex(sig)
    quote = v.read("quote")
    bad = []
    for off in range(start, start + len(sig)):
        m = bytearray(der)
        m[off] ^= 0x01
        code = _code(v, quote, json.dumps({**doc, field: bytes(m).hex()}).encode())
        if code != f"revocation.intel_{field}_bad_signature":
            bad.append((off, code))
    assert not bad, bad[:10]
