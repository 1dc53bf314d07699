"""The certificate profile's name and key-usage rules (issue 11 section 6), through check_request
and build_end_entity as issuance calls them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_service.ca.profile import build_end_entity, build_issuing, build_root, check_request, valid_hostname
from ca_service.crypto.keys import KEY_TYPES, parse_csr
from ca_service.errors import CertificateRequestRefused
from ca_service.policy.model import load_policy

POLICY = """
name: names
evidence: {required: [sim], sim: {debug: false}}
certificate:
  max_lifetime: 1h
  key_types: [ec-p256, ed25519, rsa-3072]
  san: {dns: ["*.cvm.local", "ca.example"]%s}
%s"""


def _policy(wildcards: bool = False, key_agreement: bool = False):
    return load_policy(POLICY % (", wildcards: true" if wildcards else "",
                                 "  key_agreement: true" if key_agreement else ""))


def _csr(names: list[str], key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")]))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    pem = b.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()).public_bytes(Encoding.PEM)
    return parse_csr(pem, KEY_TYPES)


@pytest.mark.parametrize("name", ["*.cvm.local", "x*.cvm.local", "-.cvm.local", "a_b.cvm.local", "a-.cvm.local",
                                  "a..cvm.local", "a.b.cvm.local", "cvm.local", "evil.example", "*.ca.example"])
def test_names_refused_under_a_wildcard_pattern(name):
    with pytest.raises(CertificateRequestRefused):
        check_request(_policy(), _csr([name]), None)


def test_wildcard_name_only_when_the_policy_allows_it_and_names_it():
    assert check_request(_policy(wildcards=True), _csr(["*.cvm.local"]), None).dns_names == ("*.cvm.local",)
    for name in ("x*.cvm.local", "*.*.cvm.local", "*.ca.example", "*.local"):
        with pytest.raises(CertificateRequestRefused):
            check_request(_policy(wildcards=True), _csr([name]), None)


def test_valid_names_are_lower_cased_and_deduplicated():
    req = check_request(_policy(), _csr(["A1.cvm.local", "a1.CVM.local", "ca.example"]), None)
    assert req.dns_names == ("a1.cvm.local", "ca.example")


@pytest.mark.parametrize(("name", "ok"), [("a.b", True), ("a" * 63 + ".b", True), ("a" * 64 + ".b", False),
                                          ("1.2", True), ("a", False), ("a.b.", False), ("", False),
                                          (".".join(["a" * 63] * 4), False)])
def test_valid_hostname(name, ok):
    assert valid_hostname(name) is ok


def _issue(key, policy):
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root(ca_key, now=now, insecure=True)
    issuing = build_issuing(ca_key, ca_key, root, now=now, insecure=True, public_url="http://x")
    req = check_request(policy, _csr(["a.cvm.local"], key), None)
    cert = build_end_entity(req, issuer_key=ca_key, issuer=issuing, now=now, serial=x509.random_serial_number(),
                            ear={}, public_url="http://x", insecure=True)
    return cert.extensions.get_extension_for_class(x509.KeyUsage).value


def test_key_usage_by_key_type_and_policy():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    plain = _issue(ec_key, _policy())
    assert plain.digital_signature and not plain.key_agreement and not plain.key_encipherment
    agree = _issue(ec_key, _policy(key_agreement=True))
    assert agree.digital_signature and agree.key_agreement and not agree.key_encipherment
    ed = _issue(ed25519.Ed25519PrivateKey.generate(), _policy(key_agreement=True))
    assert ed.digital_signature and not ed.key_agreement and not ed.key_encipherment
    rsa_ku = _issue(rsa.generate_private_key(65537, 3072), _policy(key_agreement=True))
    assert rsa_ku.digital_signature and rsa_ku.key_encipherment and not rsa_ku.key_agreement
