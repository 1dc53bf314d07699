"""An Intel-shaped PKI under a test root that only the tests pin: a test "Intel SGX Root CA", a PCK
Platform CA, a TCB signing certificate, PCK certificates with the Intel SGX extension, TDX v4 quotes
signed as a quoting enclave signs them, and TCB Info / QE Identity / PCK CRL / Root CA CRL signed as
Intel signs them. The production verifier accepts it once the root is pinned
(``TestIntel.roots``, or ``CA_SERVICE_INSECURE_TEST_ROOTS=intel=<root.pem>`` for a CA; services/roots.py).

Real data has no status change to re-appraise against (issue 14): here a test can publish a TCB recovery
(a higher ``tcbEvaluationDataNumber`` with a stricter level) or a CRL that revokes one platform's PCK.

Shapes copied from the real vector ``tdx/gcp-c3-v4-uptodate`` (Google C3, FMSPC 00806F050000), or with
``TestIntel(shape=SGX_SHAPE)`` from ``sgx/automata-v3-swhardening`` (an SGX v3 quote, FMSPC 00606A000000,
the QE report certification data carried directly as A.4 lays out for v3):
- quote: its header, TD report body (with the caller's report data) and QE report (with report data =
  SHA-256(attestation key || QE auth data) || 0^32, A.4), re-signed: the attestation key (fresh per
  quote) signs header || body, the platform's PCK key signs the QE report; certification data type 6
  wrapping type 5 (PEM PCK leaf, PCK Platform CA, root), as Intel DCAP Quoting Library API A.4 lays out;
- PCK certificate: the SGX extension of PCK profile 1.5 with the entries of the real one (PPID, TCB
  comp01..16 + PCESVN + CPUSVN, PCE-ID, FMSPC, SGX Type, PlatformInstanceID, Configuration), with the
  platform's FMSPC, PPID and TCB component SVNs;
- TCB Info: the real TCB Info v3 body (levels, tdxModule, tdxModuleIdentities) for the platform's FMSPC,
  with the test's evaluation data number, dates and levels; QE Identity: the real TD_QE identity. Each
  is signed with ECDSA P-256 over the exact JSON bytes by the TCB signing key (raw r||s, hex), as PCS v4
  serves them.

:meth:`TestIntel.bundle` turns a collateral document into the offline bundle ``collateral import``
reads, through the shipped mapping (``collateral/offered.py``): the same responses PCS would serve.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca_service.collateral.offered import offered_responses
from ca_service.evidence.intel.der import encode_oid
from ca_service.evidence.intel.parse import HEADER_LEN, parse_quote
from ca_service.evidence.intel.pck import SGX_EXTENSION_OID, load_pem_chain, parse_pck_extension
from ca_service.evidence.trust import TrustRoots
from tests.vectors.manifest import vectors_dir

SHAPE = "tdx/gcp-c3-v4-uptodate"
SGX_SHAPE = "sgx/automata-v3-swhardening"  # SGX v3 quote, FMSPC 00606A000000
# the collateral of each shape whose TCB Info and QE Identity bodies the test vendor re-signs
_SHAPE_COLLATERAL = {SHAPE: "collateral-2025-10", SGX_SHAPE: "collateral"}
_ECDSA = ec.ECDSA(hashes.SHA256())
_SGX = "1.2.840.113741.1.13.1"
# Real platform's SGX TCB components (the Google C3 PCK): the top level of its TCB Info admits them.
REAL_CPU_SVN = (8, 8, 2, 2, 4, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0)
REAL_FMSPC = bytes.fromhex("00806f050000")


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _oid(dotted: str) -> bytes:
    return _tlv(0x06, encode_oid(dotted))


def _int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def sgx_extension(*, ppid: bytes, cpu_svn: tuple[int, ...], pce_svn: int, pce_id: bytes, fmspc: bytes) -> bytes:
    """The DER of the Intel SGX extension (PCK profile 1.5), entries as in a real Platform CA PCK."""
    tcb = [_seq(_oid(f"{_SGX}.2.{i + 1}"), _int(svn)) for i, svn in enumerate(cpu_svn)]
    tcb += [_seq(_oid(f"{_SGX}.2.17"), _int(pce_svn)), _seq(_oid(f"{_SGX}.2.18"), _tlv(0x04, bytes(cpu_svn)))]
    return _seq(
        _seq(_oid(f"{_SGX}.1"), _tlv(0x04, ppid)),
        _seq(_oid(f"{_SGX}.2"), _seq(*tcb)),
        _seq(_oid(f"{_SGX}.3"), _tlv(0x04, pce_id)),
        _seq(_oid(f"{_SGX}.4"), _tlv(0x04, fmspc)),
        _seq(_oid(f"{_SGX}.5"), _tlv(0x0A, b"\x01")),  # SGX Type: Scalable
        _seq(_oid(f"{_SGX}.6"), _tlv(0x04, hashlib.sha256(b"instance" + ppid).digest()[:16])),
        _seq(_oid(f"{_SGX}.7"), _seq(_seq(_oid(f"{_SGX}.7.1"), _tlv(0x01, b"\xff")),
                                     _seq(_oid(f"{_SGX}.7.2"), _tlv(0x01, b"\x00")),
                                     _seq(_oid(f"{_SGX}.7.3"), _tlv(0x01, b"\xff")))),
    )


def _key(label: str) -> ec.EllipticCurvePrivateKey:
    """A fixed P-256 key per label: the same test PKI in every run."""
    return ec.derive_private_key(int.from_bytes(hashlib.sha256(b"ca-service/testroot/" + label.encode()).digest(),
                                                "big") % (2**255), ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ca-service tests (not Intel)")])


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, _ECDSA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


@dataclass(frozen=True)
class Platform:
    """One TDX host: its PCK key and certificate (FMSPC, TCB components in the SGX extension)."""

    name: str
    fmspc: bytes
    cpu_svn: tuple[int, ...]
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def serial(self) -> int:
        return self.cert.serial_number


class TestIntel:
    """The test PKI (module docstring). ``now`` anchors every validity window (default: the real clock,
    which is what a CA that issues with ``POST /v1/certificates`` runs on)."""

    __test__ = False  # not a pytest class

    def __init__(self, now: datetime | None = None, shape: str = SHAPE) -> None:
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)
        self._shape = vectors_dir() / shape
        self._real = parse_quote((self._shape / "quote.bin").read_bytes())
        self._collateral = json.loads((self._shape / _SHAPE_COLLATERAL[shape] / "collateral.json").read_text())
        real_pck = parse_pck_extension(load_pem_chain(self._real.cert_data, "PCK")[0])
        # the real platform of the shape: a platform() with these SVNs meets its TCB Info's top level
        self.fmspc, self.cpu_svn, self.pce_svn = real_pck.fmspc, real_pck.cpu_svn, real_pck.pce_svn
        start, end = self.now - timedelta(days=365), self.now + timedelta(days=3650)
        self.root_key, self.ca_key, self.tcb_key = _key("root"), _key("pck-platform-ca"), _key("tcb-signing")
        self.root = self._cert("Intel SGX Root CA", self.root_key, None, ca=True, path=1, start=start, end=end)
        self.pck_ca = self._cert("Intel SGX PCK Platform CA", self.ca_key, (self.root, self.root_key), ca=True,
                                 path=0, start=start, end=end)
        self.tcb_signer = self._cert("Intel SGX TCB Signing", self.tcb_key, (self.root, self.root_key), ca=False,
                                     path=None, start=start, end=end)
        self._platforms = 0
        # one Root CA CRL and one empty PCK CRL, the same bytes in every document (as PCS serves one of each)
        self.root_crl = self._crl(self.root, self.root_key, (), self.now - timedelta(days=2), 1)
        self.empty_pck_crl = self.pck_crl()

    # --- certificates ---------------------------------------------------------------------------------

    def _cert(self, cn: str, key: ec.EllipticCurvePrivateKey,
              issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool, path: int | None,
              start: datetime, end: datetime, extra: bytes | None = None, serial: int | None = None) -> x509.Certificate:
        issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key((issuer[1] if issuer else key).public_key())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
             .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(aki, critical=False).add_extension(ski, critical=False)
             .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                          crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path), critical=True))
        if extra is not None:
            b = b.add_extension(x509.UnrecognizedExtension(SGX_EXTENSION_OID, extra), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    @property
    def roots(self) -> TrustRoots:
        """The vendor pins plus this test root (what ``CA_SERVICE_INSECURE_TEST_ROOTS`` gives a CA)."""
        return TrustRoots().with_test_root("intel", self.root.public_bytes(Encoding.DER))

    def write_root(self, path: Path) -> Path:
        path.write_bytes(self.root_pem)
        return path

    def platform(self, name: str, *, fmspc: bytes | None = None, cpu_svn: tuple[int, ...] | None = None,
                 pce_svn: int | None = None) -> Platform:
        """A new host with its own PCK key and certificate (issued by the PCK Platform CA); by default
        with the FMSPC and SVNs of the shape's real platform."""
        self._platforms += 1
        fmspc, cpu_svn = fmspc or self.fmspc, cpu_svn or self.cpu_svn
        pce_svn = self.pce_svn if pce_svn is None else pce_svn
        key = _key(f"pck/{name}")
        ext = sgx_extension(ppid=hashlib.sha256(b"ppid/" + name.encode()).digest()[:16], cpu_svn=cpu_svn,
                            pce_svn=pce_svn, pce_id=b"\x00\x00", fmspc=fmspc)
        cert = self._cert("Intel SGX PCK Certificate", key, (self.pck_ca, self.ca_key), ca=False, path=None,
                          start=self.now - timedelta(days=30), end=self.now + timedelta(days=7 * 365), extra=ext)
        return Platform(name, fmspc, cpu_svn, key, cert)

    # --- quotes ----------------------------------------------------------------------------------------

    def quote(self, platform: Platform, report_data: bytes) -> bytes:
        """A quote by ``platform`` carrying ``report_data`` (64 bytes), signed as DCAP signs it: TDX v4
        (the TDX shape) or SGX v3 (the SGX shape)."""
        if len(report_data) != 64:
            raise ValueError("report data is 64 bytes")
        real = self._real
        sgx = real.header.version == 3
        body = bytearray(real.raw[HEADER_LEN:real.signed_len])
        # A.3.2 TD Quote Body REPORTDATA at 520; SGX REPORT body (A.3, SDM 38.15) REPORTDATA at 320
        body[320 if sgx else 520:(320 if sgx else 520) + 64] = report_data
        signed = real.raw[:HEADER_LEN] + bytes(body)
        att = ec.generate_private_key(ec.SECP256R1())
        att_pub = att.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        qe_auth = real.qe_auth_data
        qe = bytearray(real.qe_report.raw)
        qe[320:384] = hashlib.sha256(att_pub + qe_auth).digest() + bytes(32)  # A.4: binds the attestation key
        cert_data = _pem(platform.cert, self.pck_ca, self.root).encode()
        qe_cert_data = (bytes(qe) + _raw_sig(platform.key, bytes(qe)) + struct.pack("<H", len(qe_auth)) + qe_auth
                        + struct.pack("<HI", 5, len(cert_data)) + cert_data)
        sig_data = _raw_sig(att, signed) + att_pub
        # A.4: v3 carries the QE report certification data directly, v4 wraps it in type 6
        sig_data += qe_cert_data if sgx else struct.pack("<HI", 6, len(qe_cert_data)) + qe_cert_data
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    # --- collateral ------------------------------------------------------------------------------------

    def _real_json(self, member: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._collateral[member])
        return data

    def tcb_levels(self, *, recovery: str | None = None) -> list[dict[str, Any]]:
        """The real TCB Info's levels, the top one (which the real platform's SVNs meet) UpToDate with no
        advisories; with ``recovery`` (an advisory id), a TCB recovery: a new top level (SGX comp01/comp02
        one higher than the real platform's) is UpToDate, and the former top level OutOfDate with that
        advisory."""
        levels: list[dict[str, Any]] = copy.deepcopy(self._real_json("tcb_info")["tcbLevels"])
        levels[0].update(tcbStatus="UpToDate", advisoryIDs=[])
        if recovery is None:
            return levels
        top = copy.deepcopy(levels[0])
        for i in (0, 1):
            top["tcb"]["sgxtcbcomponents"][i]["svn"] = self.cpu_svn[i] + 1
        top["tcbDate"] = self.now.strftime("%Y-%m-%dT00:00:00Z")
        levels[0].update(tcbStatus="OutOfDate", advisoryIDs=[recovery])
        return [top, *levels]

    def tcb_info(self, fmspc: bytes, *, evaluation: int, levels: list[dict[str, Any]] | None = None,
                 issued: datetime | None = None) -> tuple[str, str]:
        """(exact tcbInfo JSON text, signature hex) for ``fmspc``."""
        body = self._real_json("tcb_info")
        issued = issued or self.now - timedelta(hours=2)
        body.update(fmspc=fmspc.hex().upper(), tcbEvaluationDataNumber=evaluation, issueDate=_rfc3339(issued),
                    nextUpdate=_rfc3339(issued + timedelta(days=30)))
        body["tcbLevels"] = levels if levels is not None else self.tcb_levels()
        text = json.dumps(body, separators=(",", ":"))
        return text, _raw_sig(self.tcb_key, text.encode()).hex()

    def qe_identity(self, *, evaluation: int, issued: datetime | None = None) -> tuple[str, str]:
        body = self._real_json("qe_identity")
        issued = issued or self.now - timedelta(hours=2)
        body.update(tcbEvaluationDataNumber=evaluation, issueDate=_rfc3339(issued),
                    nextUpdate=_rfc3339(issued + timedelta(days=30)))
        text = json.dumps(body, separators=(",", ":"))
        return text, _raw_sig(self.tcb_key, text.encode()).hex()

    def _crl(self, issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: tuple[int, ...],
             issued: datetime, number: int) -> bytes:
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(issued)
             .next_update(issued + timedelta(days=30)).add_extension(x509.CRLNumber(number), critical=False))
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(issued).build())
        return b.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)

    def pck_crl(self, revoked: tuple[Platform, ...] = (), *, issued: datetime | None = None, number: int = 1) -> bytes:
        """A PCK Platform CA CRL (DER) listing ``revoked`` platforms' PCK certificates."""
        return self._crl(self.pck_ca, self.ca_key, tuple(p.serial for p in revoked),
                         issued or self.now - timedelta(hours=2), number)

    def collateral(self, fmspc: bytes, *, evaluation: int, levels: list[dict[str, Any]] | None = None,
                   pck_crl: bytes | None = None, issued: datetime | None = None) -> bytes:
        """A QuoteCollateralV3 JSON document (the shape ``ca-service evidence verify --collateral`` takes)."""
        tcb, tcb_sig = self.tcb_info(fmspc, evaluation=evaluation, levels=levels, issued=issued)
        qe, qe_sig = self.qe_identity(evaluation=evaluation, issued=issued)
        signing = _pem(self.tcb_signer, self.root)
        return json.dumps({
            "pck_crl_issuer_chain": _pem(self.pck_ca, self.root),
            "root_ca_crl": self.root_crl.hex(),
            "pck_crl": (pck_crl if pck_crl is not None else self.empty_pck_crl).hex(),
            "tcb_info_issuer_chain": signing, "tcb_info": tcb, "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": signing, "qe_identity": qe, "qe_identity_signature": qe_sig,
        }).encode()

    def bundle(self, *documents: bytes, fetched_at: datetime | None = None) -> bytes:
        """The offline bundle of these collateral documents: each item as Intel PCS v4 serves it
        (URL, body, issuer chain header), mapped by the shipped ``collateral/offered.py``; one item per URL
        (the first document's QE Identity, CRLs)."""
        seen: dict[str, dict[str, Any]] = {}
        for doc in documents:
            pairs, _ = offered_responses("tdx-quote", [doc], fetched_at or self.now)
            for _, resp in pairs:
                seen.setdefault(resp.url, resp.to_json())
        return json.dumps(list(seen.values()), indent=1).encode()
