"""Intel chains and CRLs are checked over the bytes as they were signed, not as pyca encodes them again.

``der.signed_part`` takes a certificate's tbsCertificate or a CRL's tbsCertList out of its DER;
``pck.ecdsa_valid`` checks the signature over it. Every byte of a real PCK certificate's and a real
PCK CRL's signed part is flipped: none may pass.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca_service.errors import EvidenceError
from ca_service.evidence.intel import collateral as coll_mod
from ca_service.evidence.intel import der
from ca_service.evidence.intel import pck as pck_mod
from ca_service.evidence.intel.parse import parse_quote
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

V4 = next(v for v in vectors_for("tdx") if v.path == "tdx/dcapqvl-v4-uptodate")
DOC = json.loads(V4.read("collateral"))
PCK_CHAIN = x509.load_pem_x509_certificates(parse_quote(V4.read("quote")).cert_data)
CRL_DER = bytes.fromhex(DOC["pck_crl"])
CRL_ISSUER = x509.load_pem_x509_certificates(DOC["pck_crl_issuer_chain"].encode())[0]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(data: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(data) + b"-----END CERTIFICATE-----\n"


def test_signed_part_is_what_pyca_reads_as_signed() -> None:
    for cert in PCK_CHAIN:
        assert der.signed_part(_der(cert)) == cert.tbs_certificate_bytes
    assert der.signed_part(CRL_DER) == x509.load_der_x509_crl(CRL_DER).tbs_certlist_bytes


@pytest.mark.parametrize("data", [
    b"", b"\x30", b"\x30\x00",  # nothing signed
    CRL_DER + b"\x00",  # trailing data after the SEQUENCE
    CRL_DER[:-1],  # truncated
    b"\x31" + CRL_DER[1:],  # a SET, not a SEQUENCE
    b"\x30\x03\x02\x01\x00",  # the first element is not a SEQUENCE
    b"\x30\x81\x03\x30\x01\x00",  # non-minimal length
    b"\x30\x80\x30\x00\x00\x00",  # indefinite length
])
def test_signed_part_refuses_what_is_not_one_signed_sequence(data: bytes) -> None:
    with pytest.raises(der.DerError):
        der.signed_part(data)


def test_ecdsa_valid_needs_the_right_key_algorithm_and_bytes() -> None:
    leaf, ca = PCK_CHAIN[0], PCK_CHAIN[1]
    tbs, sig, alg = leaf.tbs_certificate_bytes, leaf.signature, leaf.signature_algorithm_oid
    assert pck_mod.ecdsa_valid(ca.public_key(), sig, tbs, alg)
    assert not pck_mod.ecdsa_valid(leaf.public_key(), sig, tbs, alg)  # another key
    assert not pck_mod.ecdsa_valid(ca.public_key(), sig, tbs + b"\x00", alg)  # other bytes
    assert not pck_mod.ecdsa_valid(ca.public_key(), sig, tbs, x509.SignatureAlgorithmOID.RSA_WITH_SHA256)
    # The same signature read as made with SHA-384: its own hash is part of what is checked.
    assert not pck_mod.ecdsa_valid(ca.public_key(), sig, tbs, x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assert not pck_mod.ecdsa_valid(rsa_key, sig, tbs, alg)
    assert not pck_mod.ecdsa_valid(ca.public_key(), b"\x30\x00", tbs, alg)  # not a signature


def test_a_link_whose_issuer_name_differs_is_refused() -> None:
    """The same key signs a certificate that names another issuer: the link is refused for the name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CA")])
    other = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Not the CA")])

    def cert(subject: x509.Name, issuer: x509.Name, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(V4.verify_time)
             .not_valid_after(V4.verify_time).add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        return b.sign(key, hashes.SHA256())

    root = cert(name, name, True)
    good, misnamed = cert(other, name, False), cert(other, other, False)
    pins = frozenset({root.fingerprint(hashes.SHA256()).hex()})
    pck_mod.clear_cache()
    assert pck_mod.verify_chain([good, root], pins, "test").leaf == good
    with pytest.raises(EvidenceError) as exc:
        pck_mod.verify_chain([misnamed, root], pins, "test")
    assert exc.value.code == "evidence.chain_invalid"


def test_every_flip_of_the_pck_certificate_signed_part_breaks_the_chain() -> None:
    leaf, rest = _der(PCK_CHAIN[0]), [_der(c) for c in PCK_CHAIN[1:]]
    tbs = der.signed_part(leaf)
    start = leaf.index(tbs)
    pem_rest = b"".join(_pem(c) for c in rest)
    passed = []
    for off in range(start, start + len(tbs)):
        m = bytearray(leaf)
        m[off] ^= 0x01
        pem = _pem(bytes(m)) + pem_rest
        try:
            pck_mod.verify_chain(pck_mod.load_pem_chain(pem, "PCK"), DEFAULT_ROOTS.intel, "PCK")
        except EvidenceError as exc:
            assert exc.code == "evidence.chain_invalid", (off, exc.code)
        else:
            passed.append(off)
    assert not passed, passed[:10]


def test_every_flip_of_the_pck_crl_signed_part_is_refused() -> None:
    tbs = der.signed_part(CRL_DER)
    start = CRL_DER.index(tbs)
    assert coll_mod.crl_source(CRL_DER.hex(), CRL_ISSUER, "pck_crl", "PCK CRL").state == "good"
    seen: dict[str, int] = {}
    for off in range(start, start + len(tbs)):
        m = bytearray(CRL_DER)
        m[off] ^= 0x01
        state = coll_mod.crl_source(bytes(m).hex(), CRL_ISSUER, "pck_crl", "PCK CRL").state
        seen[state] = seen.get(state, 0) + 1
    assert set(seen) <= {"bad_signature", "invalid"}, seen
    assert seen.get("bad_signature", 0) > len(tbs) // 2, seen  # most flips still parse: the signature fails


def test_names_as_encoded_are_what_pyca_reads() -> None:
    roots = x509.load_pem_x509_certificates(DOC["tcb_info_issuer_chain"].encode())
    for cert in [*PCK_CHAIN, *roots, CRL_ISSUER]:
        issuer, subject = der.certificate_names(cert.tbs_certificate_bytes)
        assert (issuer, subject) == (cert.issuer.public_bytes(), cert.subject.public_bytes())
    for field in ("pck_crl", "root_ca_crl"):
        crl = x509.load_der_x509_crl(bytes.fromhex(DOC[field]))
        assert der.crl_issuer(crl.tbs_certlist_bytes) == crl.issuer.public_bytes()


def test_names_of_a_v1_certificate_and_a_v1_crl() -> None:
    """No [0] version in a v1 certificate, no version INTEGER in a v1 CRL (RFC 5280 4.1, 5.1)."""
    alg = b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"
    issuer, subject = b"\x30\x03\x31\x01\x00", b"\x30\x02\x31\x00"
    validity = b"\x30\x00"
    body = b"\x02\x01\x01" + alg + issuer + validity + subject + b"\x30\x00"
    assert der.certificate_names(bytes([0x30, len(body)]) + body) == (issuer, subject)
    this_update = b"\x17\x0d" + b"261208000000Z"
    crl_body = alg + issuer + this_update
    assert der.crl_issuer(bytes([0x30, len(crl_body)]) + crl_body) == issuer
    # A tbsCertList is not a tbsCertificate, nor the other way round.
    with pytest.raises(der.DerError):
        der.certificate_names(bytes([0x30, len(crl_body)]) + crl_body)
    with pytest.raises(der.DerError):
        der.crl_issuer(bytes([0x30, len(body)]) + body)
    with pytest.raises(der.DerError):
        der.elements(bytes([0x30, len(body)]) + body + b"\x00")  # trailing data
