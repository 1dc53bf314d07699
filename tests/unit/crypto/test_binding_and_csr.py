"""The binding (ADR 0001) and CSR checks."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca_service.crypto.keys import parse_csr, spki_der
from ca_service.errors import BindingMismatch, CSRError
from ca_service.evidence.binding import binding_value, check_binding


def _csr(key, algo=hashes.SHA256()):
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM)


def test_binding_value_is_the_documented_formula():
    nonce = bytes(range(32))
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_der(key.public_key())
    expected = hashlib.sha512(b"ca-service/binding/v1" + nonce + hashlib.sha256(spki).digest()).digest()
    assert binding_value(nonce, spki) == expected and len(expected) == 64
    check_binding(expected, nonce, spki)
    check_binding(expected[:32], nonce, spki)  # a 32-byte field carries the first half


@pytest.mark.parametrize("mutate", [
    lambda rd, n, s: (rd[:-1] + bytes([rd[-1] ^ 1]), n, s),
    lambda rd, n, s: (rd, bytes(32), s),
    lambda rd, n, s: (rd, n, s + b"\x00"),
    lambda rd, n, s: (rd[:16], n, s),
    lambda rd, n, s: (b"", n, s),
])
def test_binding_mismatches(mutate):
    nonce = b"\x07" * 32
    spki = spki_der(ed25519.Ed25519PrivateKey.generate().public_key())
    rd, n, s = mutate(binding_value(nonce, spki), nonce, spki)
    with pytest.raises(BindingMismatch):
        check_binding(rd, n, s)


@pytest.mark.parametrize("key,kt", [
    (ec.generate_private_key(ec.SECP256R1()), "ec-p256"),
    (ec.generate_private_key(ec.SECP384R1()), "ec-p384"),
    (ed25519.Ed25519PrivateKey.generate(), "ed25519"),
])
def test_allowed_key_types(key, kt):
    parsed = parse_csr(_csr(key, None if kt == "ed25519" else hashes.SHA256()))
    assert parsed.key_type == kt
    assert parsed.spki_der == spki_der(key.public_key())


@pytest.mark.parametrize("key,code", [
    (ec.generate_private_key(ec.SECP521R1()), "csr.key_type_not_allowed"),
    (ec.generate_private_key(ec.SECP256K1()), "csr.key_type_not_allowed"),
    (rsa.generate_private_key(65537, 2048), "csr.key_type_not_allowed"),
])
def test_refused_key_types(key, code):
    with pytest.raises(CSRError) as ei:
        parse_csr(_csr(key))
    assert ei.value.code == code


def test_rsa_3072_only_when_allowed():
    key = rsa.generate_private_key(65537, 3072)
    with pytest.raises(CSRError):
        parse_csr(_csr(key))
    assert parse_csr(_csr(key), allowed=("rsa-3072",)).key_type == "rsa-3072"


def test_garbage_and_oversized():
    for bad in (b"", b"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n",
                b"x" * 20000, "é".encode()):
        with pytest.raises(CSRError) as ei:
            parse_csr(bad)
        assert ei.value.code == "csr.malformed"
