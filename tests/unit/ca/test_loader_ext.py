"""The loader certificate's link to its CVM certificate: RFC 9763 relatedCert + the serial extension."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_service.ca.loader_ext import (
    ID_CA_SERVICE_CVM_CERT,
    ID_PE_RELATED_CERT,
    CvmReference,
    cvm_reference,
    encode_extensions,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _cert(extensions=()) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + timedelta(hours=1)))
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    return b.sign(key, hashes.SHA256())


def test_round_trip_through_der():
    cvm = _cert()
    ref = CvmReference(format(0x4AC943507197DBAECFF7816E9F107F97008D5388, "x"),
                       hashlib.sha256(cvm.public_bytes(Encoding.DER)).hexdigest())
    loader = x509.load_der_x509_certificate(_cert(encode_extensions(ref)).public_bytes(Encoding.DER))
    assert cvm_reference(loader) == ref
    assert cvm_reference(cvm) is None
    related = loader.extensions.get_extension_for_oid(ID_PE_RELATED_CERT)
    assert not related.critical
    # RFC 9763: SEQUENCE { AlgorithmIdentifier { id-sha256 }, OCTET STRING (32) }
    assert related.value.value == bytes.fromhex("302f300b0609608648016503040201" + "0420" + ref.sha256)


def test_openssl_parses_the_extensions():
    ref = CvmReference("1f", "ab" * 32)
    pem = _cert(encode_extensions(ref)).public_bytes(Encoding.PEM)
    out = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True, check=True).stdout
    assert b"1.3.6.1.5.5.7.1.36" in out or b"Related Certificate" in out
    assert ID_CA_SERVICE_CVM_CERT.dotted_string.encode() in out


def test_disagreeing_extensions_are_refused():
    a, b = encode_extensions(CvmReference("1f", "ab" * 32)), encode_extensions(CvmReference("1f", "cd" * 32))
    with pytest.raises(ValueError, match="disagrees"):
        cvm_reference(_cert([a[1], b[0]]))
    with pytest.raises(ValueError, match="malformed"):
        cvm_reference(_cert([a[1]]))  # the serial without the RFC 9763 hash
    with pytest.raises(ValueError, match="malformed"):
        cvm_reference(_cert([a[0], x509.UnrecognizedExtension(ID_CA_SERVICE_CVM_CERT, b"\x30\x03\x02\x01")]))
