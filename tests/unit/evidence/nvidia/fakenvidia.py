"""A test NVIDIA device PKI: a root pinned only in tests (``TrustRoots(nvidia_device=...)``, the
documented way to inject a root), a five-certificate device chain shaped like an H100's, the real
2023 report re-signed by the test attestation key, and OCSP responses signed as a test wants.

NVIDIA's responder is not reachable from here and nobody but NVIDIA can sign for its chain, so the
good-OCSP path is exercised under this root; the real vectors' chains give the refusals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca_service.evidence.trust import TrustRoots
from tests.vectors.manifest import vectors_for

VECTOR = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
AT = datetime(2024, 6, 1, tzinfo=UTC)
NAMES = ("Test Device Identity CA", "Test GH100 Identity", "Test GH100 Provisioner ICA 1", "Test GH100 GSP BROM",
         "Test GH100 GSP FMC LF")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ca-service tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool, eku: list[x509.ObjectIdentifier] | None = None,
          not_after: datetime = datetime(2099, 1, 1, tzinfo=UTC)) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC)).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA384())


def impostor(issuer: x509.Certificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed OCSP-signing certificate that copies ``issuer``'s name, with a key of its own."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(issuer.subject).issuer_name(issuer.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC)).not_valid_after(datetime(2099, 1, 1, tzinfo=UTC))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .sign(key, hashes.SHA384()))
    return cert, key


@dataclass
class FakeNvidia:
    keys: list[ec.EllipticCurvePrivateKey] = field(default_factory=list)
    certs: list[x509.Certificate] = field(default_factory=list)  # root first, leaf last

    def __post_init__(self) -> None:
        self.keys = [ec.generate_private_key(ec.SECP384R1()) for _ in NAMES]
        for i, cn in enumerate(NAMES):
            parent = max(i - 1, 0)
            self.certs.append(_cert(cn, self.keys[i], NAMES[parent], self.keys[parent], ca=i < len(NAMES) - 1))
        self.delegates: dict[int, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    def other_device(self) -> FakeNvidia:
        """Another GPU under the same root, identity and provisioner CAs: its own GSP BROM and attestation key
        (so its BROM's OCSP answer is one no other test has sent)."""
        other = FakeNvidia.__new__(FakeNvidia)
        other.keys = self.keys[:3] + [ec.generate_private_key(ec.SECP384R1()) for _ in NAMES[3:]]
        other.certs = self.certs[:3]
        for i in range(3, len(NAMES)):
            other.certs.append(_cert(NAMES[i], other.keys[i], NAMES[i - 1], other.keys[i - 1], ca=i < len(NAMES) - 1))
        other.delegates = {}
        return other

    @property
    def roots(self) -> TrustRoots:
        pin = hashlib.sha256(self.certs[0].public_bytes(Encoding.DER)).hexdigest()
        return TrustRoots(nvidia_device=frozenset({pin}))

    def chain_pem(self) -> bytes:
        """Leaf first, as nvtrust's gpuAkCertChain."""
        return b"".join(c.public_bytes(Encoding.PEM) for c in reversed(self.certs))

    def report(self, raw: bytes | None = None) -> bytes:
        """The real 2023 report (or ``raw``, same layout), its signature replaced by the test AK's."""
        raw = VECTOR.read("report") if raw is None else raw
        signed = raw[:-96]
        r, s = decode_dss_signature(self.keys[-1].sign(signed, ec.ECDSA(hashes.SHA384())))
        return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def delegate(self, issuer: int, *, eku: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP384R1())
        cert = _cert(f"Test OCSP responder for {NAMES[issuer]}", key, NAMES[issuer], self.keys[issuer], ca=False,
                     eku=[ExtendedKeyUsageOID.OCSP_SIGNING] if eku else [ExtendedKeyUsageOID.CLIENT_AUTH])
        return cert, key

    def ocsp(self, index: int, *, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
             this_update: datetime = AT - timedelta(days=1), next_update: datetime | None = AT + timedelta(days=6),
             signer: str = "issuer", certid_hash: hashes.HashAlgorithm | None = None) -> bytes:
        """A DER OCSP response for certificate ``index`` (root = 0) by its issuer (``signer``:
        ``issuer``, ``delegate``, ``delegate-no-eku``, ``stranger``, ``sibling``: another CA's key)."""
        cert, issuer_i = self.certs[index], index - 1
        issuer, issuer_key = self.certs[issuer_i], self.keys[issuer_i]
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=issuer, algorithm=certid_hash or hashes.SHA384(), cert_status=status,
            this_update=this_update, next_update=next_update,
            revocation_time=this_update if status is ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=x509.ReasonFlags.key_compromise if status is ocsp.OCSPCertStatus.REVOKED else None)
        if signer == "issuer":
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
            key = issuer_key
        elif signer in ("delegate", "delegate-no-eku"):
            dcert, key = self.delegate(issuer_i, eku=signer == "delegate")
            b = b.responder_id(ocsp.OCSPResponderEncoding.NAME, dcert).certificates([dcert])
        elif signer == "sibling":  # a real CA of the chain, but not this certificate's issuer
            other = (issuer_i + 1) % (len(self.certs) - 1)
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, self.certs[other])
            key = self.keys[other]
        else:  # a key nobody designated, in a self-made certificate with the issuer's name, embedded
            forged, key = impostor(issuer)
            b = b.responder_id(ocsp.OCSPResponderEncoding.NAME, forged).certificates([forged])
        return b.sign(key, hashes.SHA384()).public_bytes(Encoding.DER)

    def all_good(self, **kw: object) -> list[bytes]:
        """Responses for every certificate NVIDIA's responder covers: all but the root and the AK leaf."""
        return [self.ocsp(i, **kw) for i in range(1, len(self.certs) - 1)]  # type: ignore[arg-type]
