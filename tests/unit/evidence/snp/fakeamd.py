"""A fake AMD key hierarchy (ARK -> ASK/ASVK -> VCEK/VLEK) and report signer for unit tests.

Real vectors cannot show every case (report v5, Turin, a revoked ASK, a VCEK of the right chip
at the wrong TCB...). These certificates have the shape of AMD's (names, RSASSA-PSS SHA-384 salt
48, AMD extensions) but are signed by test keys, so they verify only under a ``TrustRoots`` that
pins this fake ARK. RSA-2048 keeps key generation fast; the verifier does not depend on key size.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_service.evidence.trust import TrustRoots

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
AMD = "1.3.6.1.4.1.3704.1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
AT = datetime(2025, 6, 1, tzinfo=UTC)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_int(n: int) -> bytes:
    body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def der_ia5(s: str) -> bytes:
    return bytes([0x16, len(s)]) + s.encode()


def amd_ext(suffix: str, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{AMD}.{suffix}"), value)


def _ca(
    cn: str, issuer_cn: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey, serial: int
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(T0 - timedelta(days=365))
        .not_valid_after(T0 + timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if cn == issuer_cn else 0), critical=True
        )
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, cn == issuer_cn, False, False),
            critical=True,
        )
        .sign(signer, hashes.SHA384(), rsa_padding=PSS)
    )


_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def _rsa(label: str) -> rsa.RSAPrivateKey:
    if label not in _KEYS:
        _KEYS[label] = rsa.generate_private_key(65537, 2048)
    return _KEYS[label]


@dataclass
class FakeAmd:
    line: str = "Milan"
    ark_key: rsa.RSAPrivateKey = field(init=False)
    ask_key: rsa.RSAPrivateKey = field(init=False)
    asvk_key: rsa.RSAPrivateKey = field(init=False)
    ark: x509.Certificate = field(init=False)
    ask: x509.Certificate = field(init=False)
    asvk: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.ark_key, self.ask_key, self.asvk_key = (_rsa(f"{self.line}/{r}") for r in ("ark", "ask", "asvk"))
        ark_cn = f"ARK-{self.line}"
        self.ark = _ca(ark_cn, ark_cn, self.ark_key, self.ark_key, 0x10000)
        self.ask = _ca(f"SEV-{self.line}", ark_cn, self.ask_key, self.ark_key, 0x10001)
        self.asvk = _ca(f"SEV-VLEK-{self.line}", ark_cn, self.asvk_key, self.ark_key, 0x10101)

    @property
    def roots(self) -> TrustRoots:
        pin = hashlib.sha256(self.ark.public_bytes(Encoding.DER)).hexdigest()
        return TrustRoots(amd=frozenset({pin}))

    def chain_pem(self, vlek: bool = False) -> bytes:
        inter = self.asvk if vlek else self.ask
        return inter.public_bytes(Encoding.PEM) + self.ark.public_bytes(Encoding.PEM)

    def vek(
        self,
        *,
        chip_id: bytes,
        tcb: dict[str, int],
        vlek: bool = False,
        product_name: str | None = None,
        struct_version: int | None = None,
        hwid: bytes | None = None,
        not_before: datetime = T0,
        not_after: datetime = T0 + timedelta(days=2555),
    ) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key = ec.generate_private_key(ec.SECP384R1())
        turin = self.line == "Turin"
        exts = [
            amd_ext("1", der_int(struct_version if struct_version is not None else (1 if turin else 0))),
            amd_ext("2", der_ia5(product_name or (self.line if vlek else f"{self.line}-B0"))),
            amd_ext("3.1", der_int(tcb["bl"])),
            amd_ext("3.2", der_int(tcb["tee"])),
            amd_ext("3.3", der_int(tcb["snp"])),
            amd_ext("3.8", der_int(tcb["ucode"])),
        ]
        if turin:
            exts.append(amd_ext("3.9", der_int(tcb["fmc"])))
        if vlek:
            exts.append(amd_ext("5", der_ia5("CN=csp.example")))
        else:
            exts.append(amd_ext("4", hwid if hwid is not None else chip_id[: 8 if turin else 64]))
        builder = (
            x509.CertificateBuilder()
            .subject_name(name("SEV-VLEK" if vlek else "SEV-VCEK"))
            .issuer_name((self.asvk if vlek else self.ask).subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for ext in exts:
            builder = builder.add_extension(ext, critical=False)
        cert = builder.sign(self.asvk_key if vlek else self.ask_key, hashes.SHA384(), rsa_padding=PSS)
        return key, cert.public_bytes(Encoding.DER)

    def crl(
        self,
        *,
        this_update: datetime = T0,
        next_update: datetime = T0 + timedelta(days=365),
        revoked: tuple[int, ...] = (),
    ) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(this_update)
            .next_update(next_update)
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build()
            )
        return b.sign(self.ark_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(Encoding.DER)


def tcb_raw(bl: int, tee: int, snp: int, ucode: int, fmc: int | None = None) -> int:
    """TCB_VERSION (ABI Table 3): family 19h layout, or family 1Ah when ``fmc`` is given."""
    if fmc is None:
        return int.from_bytes(bytes([bl, tee, 0, 0, 0, 0, snp, ucode]), "little")
    return int.from_bytes(bytes([fmc, bl, tee, snp, 0, 0, 0, ucode]), "little")


def make_report(
    key: ec.EllipticCurvePrivateKey,
    *,
    version: int = 3,
    chip_id: bytes = bytes(range(64)),
    tcb: int = tcb_raw(3, 0, 8, 115),
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    policy: int = 0x30000,
    signing_key: int = 0,
    report_data: bytes = b"\x11" * 64,
    mit: tuple[int, int] = (0, 0),
) -> bytes:
    """A Table 23 report signed by ``key`` (R and S little-endian 72-byte fields)."""
    body = bytearray(0x2A0)
    struct.pack_into("<IIQ", body, 0, version, 7, policy)
    struct.pack_into("<II", body, 0x30, 0, 1)  # VMPL 0, ECDSA P-384/SHA-384
    struct.pack_into("<QQI", body, 0x38, tcb, 0x25, signing_key << 2)
    body[0x50:0x90] = report_data
    body[0x90:0xC0] = b"\x22" * 48
    struct.pack_into("<Q", body, 0x180, tcb)
    if version >= 3:
        body[0x188:0x18B] = bytes(cpuid)
    body[0x1A0:0x1E0] = chip_id
    struct.pack_into("<Q", body, 0x1E0, tcb)
    body[0x1E8:0x1EB] = bytes([29, 55, 1])
    struct.pack_into("<Q", body, 0x1F0, tcb)
    if version >= 5:
        struct.pack_into("<QQ", body, 0x1F8, *mit)
    return sign_body(key, bytes(body))


def sign_body(key: ec.EllipticCurvePrivateKey, body: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(body[:0x2A0], ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(72, "little") + s.to_bytes(72, "little") + bytes(0x200 - 144)
    return body[:0x2A0] + sig
