"""AMD certificates: product lines, roles, and the VCEK/VLEK TCB extensions.

References: AMD publication 57230, "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
Interface Specification" (Table 8 "VCEK Certificate Extensions", Table 11 for family 1Ah/Turin),
and publication 58369 for the VLEK. Extension values are DER (INTEGER for the SPLs, IA5String for
the product name and CSP id); hwID is the raw chip id (64 bytes; 8 on Turin) in older
certificates and a DER OCTET STRING in newer ones.

Certificates are picked by content, never by their position in the collateral: the VCEK/VLEK by
subject CN and key type, the ASK/ASVK as the CA certificate whose subject is the VCEK/VLEK issuer,
the ARK as the self-issued certificate whose subject is the ASK/ASVK issuer.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, univ

from ca_service.errors import CollateralInvalid
from ca_service.evidence.snp.parse import SigningKey, TcbLayout, TcbVersion

_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD}.3.9")  # family 1Ah (Turin) only, Table 11
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD}.5")  # VLEK only

VCEK_CN = "SEV-VCEK"
VLEK_CN = "SEV-VLEK"


@dataclass(frozen=True)
class ProductLine:
    """One AMD EPYC generation with SEV-SNP: its certificate names and TCB layout.

    ARK pins come from :class:`~ca_service.evidence.trust.TrustRoots.amd`; a line whose ARK is not
    pinned there is refused as ``root_untrusted`` (Milan, Genoa and Turin are pinned).
    """

    name: str
    cpu_family: int
    cpu_models: tuple[range, ...]
    tcb_layout: TcbLayout
    hwid_len: int

    @property
    def ark_cn(self) -> str:
        return f"ARK-{self.name}"

    @property
    def ask_cn(self) -> str:
        return f"SEV-{self.name}"

    @property
    def asvk_cn(self) -> str:
        return f"SEV-VLEK-{self.name}"

    def intermediate_cn(self, key: SigningKey) -> str:
        return self.asvk_cn if key is SigningKey.VLEK else self.ask_cn

    def matches_cpuid(self, family: int, model: int) -> bool:
        return family == self.cpu_family and any(model in r for r in self.cpu_models)


# CPUID family/model ranges per line (AMD processor programming references): Milan is family
# 19h models 00h-0Fh, Genoa 19h models 10h-1Fh and A0h-AFh (Bergamo/Siena), Turin 1Ah 00h-1Fh.
PRODUCT_LINES: dict[str, ProductLine] = {
    p.name: p
    for p in (
        ProductLine("Milan", 0x19, (range(0x00, 0x10),), TcbLayout.FAMILY_19H, 64),
        ProductLine("Genoa", 0x19, (range(0x10, 0x20), range(0xA0, 0xB0)), TcbLayout.FAMILY_19H, 64),
        ProductLine("Turin", 0x1A, (range(0x00, 0x20),), TcbLayout.FAMILY_1AH, 8),
    )
}


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else ""


def line_from_cn(cn: str, prefix: str) -> ProductLine | None:
    if not cn.startswith(prefix):
        return None
    return PRODUCT_LINES.get(cn[len(prefix) :])


@dataclass(frozen=True)
class VekInfo:
    """What a VCEK/VLEK certificate says about the chip and TCB it endorses (57230 Table 8/11)."""

    key_type: SigningKey
    struct_version: int
    product_name: str
    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None
    hwid: bytes | None
    csp_id: str | None

    @property
    def product_line_name(self) -> str:
        # "Milan-B0" -> "Milan": the suffix is the stepping.
        return self.product_name.split("-", 1)[0]

    def tcb_matches(self, reported: TcbVersion, layout: TcbLayout) -> bool:
        same = (self.bl, self.tee, self.snp, self.ucode) == (
            reported.bl,
            reported.tee,
            reported.snp,
            reported.ucode,
        )
        if layout is TcbLayout.FAMILY_1AH:
            same = same and self.fmc is not None and self.fmc == reported.fmc
        return same

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": self.key_type.name.lower(),
            "struct_version": self.struct_version,
            "product_name": self.product_name,
            "tcb": {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode},
        }
        if self.fmc is not None:
            out["tcb"] = {**out["tcb"], "fmc": self.fmc}  # type: ignore[dict-item]
        if self.hwid is not None:
            out["hwid"] = self.hwid.hex()
        if self.csp_id is not None:
            out["csp_id"] = self.csp_id
        return out


def _ext_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    return value.value


def _der_int(raw: bytes | None, what: str) -> int:
    if raw is None:
        raise CollateralInvalid(f"VCEK/VLEK lacks the {what} extension")
    try:
        value, rest = der_decoder.decode(raw, asn1Spec=univ.Integer())
    except PyAsn1Error as exc:
        raise CollateralInvalid(f"VCEK/VLEK {what} extension is not a DER INTEGER") from exc
    n = int(value)
    if rest or not 0 <= n <= 0xFF:
        raise CollateralInvalid(f"VCEK/VLEK {what} extension is out of range")
    return n


def _der_ia5(raw: bytes | None, what: str) -> str:
    if raw is None:
        raise CollateralInvalid(f"VCEK/VLEK lacks the {what} extension")
    try:
        value, rest = der_decoder.decode(raw, asn1Spec=char.IA5String())
    except PyAsn1Error as exc:
        raise CollateralInvalid(f"VCEK/VLEK {what} extension is not a DER IA5String") from exc
    if rest:
        raise CollateralInvalid(f"VCEK/VLEK {what} extension has trailing bytes")
    return str(value)


def _hwid(raw: bytes) -> bytes:
    # Raw chip id (legacy KDS encoding: 64 bytes, or 8 on Turin) or a DER OCTET STRING holding it
    # (newer encoding). The lengths cannot collide: a DER OCTET STRING adds a 2-byte header.
    if len(raw) in (8, 64):
        return raw
    try:
        value, rest = der_decoder.decode(raw, asn1Spec=univ.OctetString())
    except PyAsn1Error as exc:
        raise CollateralInvalid("VCEK hwID extension is neither a raw chip id nor an OCTET STRING") from exc
    out = bytes(value)
    if rest or len(out) not in (8, 64):
        raise CollateralInvalid("VCEK hwID extension has the wrong length")
    return out


def vek_key_type(cert: x509.Certificate) -> SigningKey | None:
    """VCEK or VLEK if ``cert`` looks like one (subject CN and a P-384 key), else None."""
    cn = common_name(cert.subject)
    if cn not in (VCEK_CN, VLEK_CN):
        return None
    try:
        key = cert.public_key()
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return None
    return SigningKey.VCEK if cn == VCEK_CN else SigningKey.VLEK


_VEK_CACHE: dict[bytes, VekInfo] = {}
_VEK_CACHE_SIZE = 1024


def parse_vek(cert: x509.Certificate) -> VekInfo:
    """Read the AMD extensions of a VCEK/VLEK (memoised per certificate: a warm report must not
    pay for ASN.1 decoding again).

    Raises:
        CollateralInvalid (``evidence.collateral_invalid``): not a VCEK/VLEK, or an extension is
            missing or malformed (a VCEK without hwID, an SPL that is not a small INTEGER...).
    """
    fp = cert.fingerprint(hashes.SHA256())
    cached = _VEK_CACHE.get(fp)
    if cached is not None:
        return cached
    info = _parse_vek(cert)
    if len(_VEK_CACHE) >= _VEK_CACHE_SIZE:
        _VEK_CACHE.clear()
    _VEK_CACHE[fp] = info
    return info


def _parse_vek(cert: x509.Certificate) -> VekInfo:
    key_type = vek_key_type(cert)
    if key_type is None:
        raise CollateralInvalid("certificate is not an AMD VCEK/VLEK (subject CN, P-384 key)")
    struct_version = _der_int(_ext_value(cert, OID_STRUCT_VERSION), "structVersion")
    fmc_raw = _ext_value(cert, OID_FMC_SPL)
    hwid: bytes | None = None
    if key_type is SigningKey.VCEK:
        hw = _ext_value(cert, OID_HWID)
        if hw is None:
            raise CollateralInvalid("VCEK lacks the hwID extension")
        hwid = _hwid(hw)
    csp_raw = _ext_value(cert, OID_CSP_ID)
    return VekInfo(
        key_type=key_type,
        struct_version=struct_version,
        product_name=_der_ia5(_ext_value(cert, OID_PRODUCT_NAME), "productName"),
        bl=_der_int(_ext_value(cert, OID_BL_SPL), "blSPL"),
        tee=_der_int(_ext_value(cert, OID_TEE_SPL), "teeSPL"),
        snp=_der_int(_ext_value(cert, OID_SNP_SPL), "snpSPL"),
        ucode=_der_int(_ext_value(cert, OID_UCODE_SPL), "ucodeSPL"),
        fmc=None if fmc_raw is None else _der_int(fmc_raw, "fmcSPL"),
        hwid=hwid,
        csp_id=None if csp_raw is None else _der_ia5(csp_raw, "cspId"),
    )
