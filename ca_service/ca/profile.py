"""Certificate profiles: offline root, issuing CA, short-lived end-entity certificates.

The end-entity certificate carries the attestation result in a non-critical ``id-pe-cmw``
extension (1.3.6.1.5.5.7.1.35, draft-ietf-rats-msg-wrap): ``CMW ::= CHOICE { json UTF8String, ... }``
holding a JSON CMW record ``[media-type, base64url(EAR claims JSON)]``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ca_service.crypto.keys import ParsedCSR
from ca_service.errors import CertificateRequestRefused
from ca_service.policy.model import Policy

ID_PE_CMW = ObjectIdentifier("1.3.6.1.5.5.7.1.35")
EAR_MEDIA_TYPE = 'application/eat-ucs+json; eat_profile="tag:ietf.org,2026:rats/ear#03"'
EKU_OIDS = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
BACKDATE = timedelta(minutes=5)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_cmw_json(ear: dict[str, Any]) -> bytes:
    """DER of the CMW CHOICE ``json`` alternative (a UTF8String) holding a JSON CMW record."""
    payload = base64.urlsafe_b64encode(json.dumps(ear, sort_keys=True, separators=(",", ":")).encode())
    record = json.dumps([EAR_MEDIA_TYPE, payload.rstrip(b"=").decode()], separators=(",", ":")).encode()
    return b"\x0c" + _der_length(len(record)) + record


def decode_cmw_json(der: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_cmw_json` (relying parties, tests)."""
    if not der or der[0] != 0x0C:
        raise ValueError("not a CMW json (UTF8String) value")
    first = der[1]
    if first < 0x80:
        start, length = 2, first
    else:
        nlen = first & 0x7F
        start, length = 2 + nlen, int.from_bytes(der[2 : 2 + nlen], "big")
    record = json.loads(der[start : start + length])
    if not isinstance(record, list) or len(record) != 2 or record[0] != EAR_MEDIA_TYPE:
        raise ValueError("unexpected CMW record")
    value = record[1] + "=" * (-len(record[1]) % 4)
    ear: dict[str, Any] = json.loads(base64.urlsafe_b64decode(value))
    return ear


def ear_from_certificate(cert: x509.Certificate) -> dict[str, Any]:
    ext = cert.extensions.get_extension_for_oid(ID_PE_CMW)
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ValueError("unexpected id-pe-cmw parsing")
    return decode_cmw_json(value.value)


def _sign_hash(key: Any) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def ca_name(cn: str, insecure: bool) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ca-service")]
    if insecure:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "INSECURE-DEV (not in a TEE)"))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def build_root(key: Any, *, now: datetime, insecure: bool, years: int = 10) -> x509.Certificate:
    name = ca_name("ca-service Root CA", insecure)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, _sign_hash(key))
    )


def build_issuing(key: Any, root_key: Any, root: x509.Certificate, *, now: datetime, insecure: bool,
                  public_url: str, years: int = 3) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name("ca-service Issuing CA", insecure)).issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + timedelta(days=365 * years), root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        # where the root's ARL is, so `openssl verify -crl_check_all` can check this CA too
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(arl_url(public_url))], None, None, None)]), critical=False)
        .sign(root_key, _sign_hash(root_key))
    )


def arl_url(public_url: str) -> str:
    """The root's ARL (revoked CA certificates), named by the issuing CA's CRL distribution point."""
    return f"{public_url}/v1/ca/root.crl"


# RFC 1123 section 2.1 / RFC 5280 section 4.2.1.6 "preferred name syntax": letters, digits and
# hyphens (LDH), 1..63 octets a label, no hyphen at either end, at most 253 octets in all.
_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_DNS_NAME = 253
# X.520 ub-common-name: a longer DNS name stays in the SAN only
MAX_CN = 64


def valid_hostname(name: str, *, wildcard: bool = False) -> bool:
    """Whether ``name`` (lower case) is an LDH domain name of two labels or more; with ``wildcard``,
    ``*.`` may lead one of three labels or more.

    A wildcard is only ever the whole leftmost label (RFC 6125 section 6.4.3 deprecates partial
    ones such as ``x*``) and never stands above a one-label name.
    """
    if not name or len(name) > MAX_DNS_NAME or not name.isascii():
        return False
    labels = name.split(".")
    if wildcard and labels[0] == "*" and len(labels) >= 3:
        labels = labels[1:]
    # two labels at least: a single label ("localhost") is no domain name a certificate can vouch for
    return len(labels) >= 2 and all(_LDH_LABEL.match(label) for label in labels)


def _dns_allowed(name: str, patterns: Sequence[str], wildcards: bool) -> bool:
    """``name`` is a checked, lower-case hostname (or a wildcard name when the policy allows them)."""
    for pat in (p.lower() for p in patterns):
        if name.startswith("*."):
            # a wildcard certificate only where the policy names that very wildcard and allows it
            if wildcards and name == pat:
                return True
        elif pat.startswith("*."):
            # one label only: *.cvm.example matches a.cvm.example, not a.b.cvm.example
            suffix = pat[1:]
            head = name[: -len(suffix)]
            if name.endswith(suffix) and head and "." not in head:
                return True
        elif name == pat:
            return True
    return False


@dataclass(frozen=True)
class IssuanceRequest:
    """A frozen, checked request: what the end-entity certificate will say."""

    csr: ParsedCSR
    dns_names: tuple[str, ...]
    ekus: tuple[str, ...]
    lifetime: timedelta
    key_agreement: bool = False  # policy certificate.key_agreement: EC leaves also get keyAgreement


def check_request(policy: Policy, csr: ParsedCSR, requested_lifetime: timedelta | None) -> IssuanceRequest:
    """Apply the policy's certificate rules to a CSR.

    Raises:
        CertificateRequestRefused (``certificate.refused``): key type, SAN or lifetime not allowed.
    """
    rules = policy.certificate
    key_types = rules.get("key_types", ["ec-p256", "ec-p384", "ed25519"])
    if csr.key_type not in key_types:
        raise CertificateRequestRefused(f"key type {csr.key_type} is not allowed by policy {policy.name}",
                                        check="key_types", expected=key_types, actual=csr.key_type)
    if csr.requested_other_names():
        # IP addresses, URIs, e-mail and other names: no policy rule admits them, so none is issued
        raise CertificateRequestRefused("only DNS subject alternative names can be requested", check="san")
    san = rules.get("san", {})
    patterns = san.get("dns", [])
    wildcards = bool(san.get("wildcards", False))
    dns: list[str] = []
    for requested in csr.requested_dns_names():
        name = requested.lower()
        if not valid_hostname(name, wildcard=wildcards):
            raise CertificateRequestRefused(f"DNS name {requested!r} is not a valid hostname (LDH labels, RFC 1123)"
                                            + ("" if wildcards else "; wildcards are not allowed by this policy"),
                                            check="san.dns.syntax", actual=requested)
        if not _dns_allowed(name, patterns, wildcards):
            raise CertificateRequestRefused(f"DNS name {requested!r} is not allowed by policy {policy.name}",
                                            check="san.dns", expected=patterns, actual=requested)
        if name not in dns:
            dns.append(name)
    ceiling = policy.max_lifetime
    lifetime = ceiling if requested_lifetime is None else requested_lifetime
    if lifetime <= timedelta(0) or lifetime > ceiling:
        raise CertificateRequestRefused(f"lifetime must be positive and at most {ceiling}",
                                        check="max_lifetime", expected=str(ceiling), actual=str(lifetime))
    return IssuanceRequest(csr=csr, dns_names=tuple(dns), ekus=tuple(rules.get("eku", ["clientAuth"])),
                           lifetime=lifetime, key_agreement=bool(rules.get("key_agreement", False)))


def leaf_key_usage(pub: Any, key_agreement: bool) -> x509.KeyUsage:
    """Key usage of an end-entity certificate by key type (RFC 5280 section 4.2.1.3, RFC 8813 section 3,
    RFC 8410 section 5).

    - EC: digitalSignature, plus keyAgreement when the policy says the key is for ECDH / HPKE;
      never keyEncipherment (RFC 8813: prohibited for id-ecPublicKey).
    - Ed25519: digitalSignature only (an EdDSA key cannot agree keys).
    - RSA: digitalSignature and keyEncipherment (TLS RSA key transport).
    """
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False,
        key_encipherment=isinstance(pub, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=key_agreement and isinstance(pub, ec.EllipticCurvePublicKey),
        key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )


def leaf_not_after(req: IssuanceRequest, *, now: datetime, issuer: x509.Certificate) -> datetime:
    """The leaf's ``notAfter``: its granted lifetime, never past the issuing CA's own."""
    return min(now + req.lifetime, issuer.not_valid_after_utc)


def build_end_entity(req: IssuanceRequest, *, issuer_key: Any, issuer: x509.Certificate, now: datetime,
                     serial: int, ear: dict[str, Any], public_url: str, insecure: bool,
                     extensions: Sequence[x509.ExtensionType] = ()) -> x509.Certificate:
    """The end-entity certificate; ``extensions`` are added non-critical (a loader's link to its CVM)."""
    return prepare_end_entity(req, issuer_key=issuer_key, issuer=issuer, now=now, serial=serial,
                              public_url=public_url, insecure=insecure, extensions=extensions).sign(ear)


@dataclass(frozen=True)
class EndEntityTemplate:
    """An end-entity certificate but for its attestation result: the builder up to the EAR's
    extension, the extensions after it, and the issuer's key. :meth:`sign` completes it.

    Issuance prepares it before it takes the log's sequencing lock and signs under the lock (the EAR
    names the certificate's log index), so the lock is held for the signature, not for the builder."""

    head: x509.CertificateBuilder
    tail: tuple[x509.ExtensionType, ...]
    issuer_key: Any
    subject: str  # RFC 4514, for the certificate row

    def sign(self, ear: dict[str, Any]) -> x509.Certificate:
        builder = self.head.add_extension(x509.UnrecognizedExtension(ID_PE_CMW, encode_cmw_json(ear)), critical=False)
        for ext in self.tail:
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(self.issuer_key, _sign_hash(self.issuer_key))


@dataclass(frozen=True)
class _IssuerParts:
    name: x509.Name
    authority_key_id: x509.AuthorityKeyIdentifier
    crl_distribution_points: x509.CRLDistributionPoints
    authority_information_access: x509.AuthorityInformationAccess


@lru_cache(maxsize=8)
def _issuer_parts(issuer: x509.Certificate, issuer_key: Any, public_url: str) -> _IssuerParts:
    """What every leaf of one issuing CA and public URL shares, made once per process (issue 15:
    the issuer's Name alone was ~3% of an issuance's CPU). Keyed by the issuing certificate and
    key objects (the key store hands out the same ones), so a rotated CA gets its own."""
    return _IssuerParts(
        name=issuer.subject,
        authority_key_id=x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
        crl_distribution_points=x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(f"{public_url}/v1/ca/crl")], None, None, None)]),
        authority_information_access=x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(f"{public_url}/v1/ocsp")),
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(f"{public_url}/v1/ca/issuing.cer")),
        ]))


def prepare_end_entity(req: IssuanceRequest, *, issuer_key: Any, issuer: x509.Certificate, now: datetime,
                       serial: int, public_url: str, insecure: bool,
                       extensions: Sequence[x509.ExtensionType] = ()) -> EndEntityTemplate:
    """Everything of :func:`build_end_entity` but the EAR and the signature."""
    subject_attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ca-service attested workload")]
    if insecure:
        subject_attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "INSECURE-DEV"))
    cn = (req.dns_names[0] if req.dns_names and len(req.dns_names[0]) <= MAX_CN
          else f"spki-sha256:{req.csr.spki_sha256[:32]}")
    subject_attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    subject = x509.Name(subject_attrs)
    pub = req.csr.csr.public_key()
    not_before = now - BACKDATE
    not_after = leaf_not_after(req, now=now, issuer=issuer)
    parts = _issuer_parts(issuer, issuer_key, public_url)
    head = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(parts.name)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(pub, req.key_agreement), critical=True)
        .add_extension(x509.ExtendedKeyUsage([EKU_OIDS[e] for e in req.ekus]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(parts.authority_key_id, critical=False)
        .add_extension(parts.crl_distribution_points, critical=False)
        .add_extension(parts.authority_information_access, critical=False)
    )
    tail: list[x509.ExtensionType] = []
    if req.dns_names:
        tail.append(x509.SubjectAlternativeName([x509.DNSName(n) for n in req.dns_names]))
    tail += extensions
    return EndEntityTemplate(head=head, tail=tuple(tail), issuer_key=issuer_key, subject=subject.rfc4514_string())
