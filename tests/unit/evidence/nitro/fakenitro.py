"""A fake Nitro Secure Module: its own root, intermediate and attestation key, so tests can sign
documents the real vectors do not contain (nonce, public key, tagged, debug...)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_service.evidence.trust import TrustRoots

T0 = datetime(2025, 12, 25, 12, 0, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool, start: datetime, end: datetime) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                      crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return b.sign(issuer_key, hashes.SHA384())


@dataclass
class FakeNsm:
    root_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    inter_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    leaf_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    leaf_ca: bool = False

    def __post_init__(self) -> None:
        self.root = _cert("fake nitro root", self.root_key, "fake nitro root", self.root_key, True,
                          T0 - timedelta(days=365), T0 + timedelta(days=3650))
        self.inter = _cert("fake zonal", self.inter_key, "fake nitro root", self.root_key, True,
                           T0 - timedelta(days=1), T0 + timedelta(days=5))
        self.leaf = _cert("fake enclave", self.leaf_key, "fake zonal", self.inter_key, self.leaf_ca,
                          T0, T0 + timedelta(hours=3))

    @property
    def roots(self) -> TrustRoots:
        return TrustRoots(nitro=frozenset({hashlib.sha256(self.root.public_bytes(Encoding.DER)).hexdigest()}))

    def document(self, **over: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "module_id": "i-fake-enc0001", "digest": "SHA384",
            "timestamp": int((T0 + timedelta(minutes=5)).timestamp() * 1000),
            "pcrs": {i: (bytes([i + 1]) * 48 if i in (0, 1, 2, 4) else bytes(48)) for i in range(16)},
            "certificate": self.leaf.public_bytes(Encoding.DER),
            "cabundle": [self.root.public_bytes(Encoding.DER), self.inter.public_bytes(Encoding.DER)],
            "public_key": None, "user_data": None, "nonce": None,
        }
        doc.update(over)
        return {k: v for k, v in doc.items() if v is not ...}

    def sign(self, doc: dict[str, Any] | bytes, *, tagged: bool = False, alg: int = -35,
             key: Any = None) -> bytes:
        payload = doc if isinstance(doc, bytes) else cbor2.dumps(doc)
        protected = cbor2.dumps({1: alg})
        tbs = cbor2.dumps(["Signature1", protected, b"", payload])
        r, s = decode_dss_signature((key or self.leaf_key).sign(tbs, ec.ECDSA(hashes.SHA384())))
        sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        arr = [protected, {}, payload, sig]
        return cbor2.dumps(cbor2.CBORTag(18, arr) if tagged else arr)

    @property
    def at(self) -> datetime:
        return T0 + timedelta(minutes=10)
