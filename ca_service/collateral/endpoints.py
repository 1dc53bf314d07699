"""The vendor endpoints collateral comes from: an allowlist of hosts, URLs built from typed parameters.

A URL is never taken from evidence. It is built here from the allowlisted host and typed, range-checked
parameters (an FMSPC of 6 bytes, a product line we know, SPLs of one byte...), and a recorded URL (an
offline bundle) is accepted only if it parses back into one of these endpoints.

Intel PCS API v4 ("Intel SGX and Intel TDX Provisioning Certification Service, API v4"):
  GET /sgx|tdx/certification/v4/tcb?fmspc=HEX[&update=early]
                                                       TCB Info,    header TCB-Info-Issuer-Chain
  GET /sgx|tdx/certification/v4/qe/identity[?update=early]
                                                       QE Identity, header SGX-Enclave-Identity-Issuer-Chain
  GET /sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der
                                                       PCK CRL,     header SGX-PCK-CRL-Issuer-Chain
  https://certificates.trustedservices.intel.com/IntelSGXRootCA.der
                                                       Root CA CRL (the CRL distribution point of the
                                                       Intel SGX Root CA and the PCK CA certificates)
AMD KDS (publication 57230 "VCEK Certificate and KDS Interface Specification", section 4):
  GET /vcek/v1/{product}/{hwid}?blSPL=&teeSPL=&snpSPL=&ucodeSPL=[&fmcSPL=]   VCEK (DER)
  GET /vcek|vlek/v1/{product}/cert_chain                                     ASK|ASVK + ARK (PEM)
  GET /vcek|vlek/v1/{product}/crl                                            CRL from the ARK (DER)
NVIDIA OCSP (RFC 6960; the responder of the GPU device chains, as nvtrust asks it):
  POST / with application/ocsp-request: one CertID, SHA-384, no nonce     OCSPResponse (DER)
  recorded and cached under the request's GET form (RFC 6960 appendix A.1):
  GET /{url-encoding of base64 of the DER OCSPRequest}
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.collateral.errors import HostNotAllowed, UrlNotAllowed
from ca_service.evidence import needs
from ca_service.evidence.needs import Need
from ca_service.evidence.snp.certs import PRODUCT_LINES

INTEL_PCS = "api.trustedservices.intel.com"
INTEL_CERTS = "certificates.trustedservices.intel.com"
AMD_KDS = "kdsintf.amd.com"
NVIDIA_OCSP = "ocsp.ndis.nvidia.com"
ALLOWED_HOSTS = frozenset({INTEL_PCS, INTEL_CERTS, AMD_KDS, NVIDIA_OCSP})

ROOT_CA_CRL_PATH = "/IntelSGXRootCA.der"


class Kind(StrEnum):
    """What a cached item is. The value is stored in the database: never rename one."""

    TDX_TCB_INFO = "intel.tcb_info.tdx"
    SGX_TCB_INFO = "intel.tcb_info.sgx"
    TDX_QE_IDENTITY = "intel.qe_identity.tdx"
    SGX_QE_IDENTITY = "intel.qe_identity.sgx"
    PCK_CRL = "intel.pck_crl"
    ROOT_CA_CRL = "intel.root_ca_crl"
    VCEK = "amd.vcek"
    VCEK_CHAIN = "amd.vcek_chain"
    VCEK_CRL = "amd.vcek_crl"
    VLEK_CHAIN = "amd.vlek_chain"
    VLEK_CRL = "amd.vlek_crl"
    NVIDIA_OCSP = "nvidia.ocsp"

    @property
    def has_tcb_evaluation_number(self) -> bool:
        return self in (Kind.TDX_TCB_INFO, Kind.SGX_TCB_INFO, Kind.TDX_QE_IDENTITY, Kind.SGX_QE_IDENTITY)


@dataclass(frozen=True)
class AmdTcb:
    """The SPLs a VCEK is requested for (57230 section 4.1), each one byte; ``fmc`` on Turin only."""

    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None = None

    def __post_init__(self) -> None:
        for v in (self.bl, self.tee, self.snp, self.ucode, self.fmc):
            if v is not None and not 0 <= v <= 0xFF:
                raise UrlNotAllowed("an AMD SPL is not one byte")

    def key(self) -> str:
        parts = [self.bl, self.tee, self.snp, self.ucode] + ([self.fmc] if self.fmc is not None else [])
        return ".".join(str(p) for p in parts)


@dataclass(frozen=True)
class Endpoint:
    """One vendor resource: its kind, its cache key, and the URL built from the allowlist."""

    kind: Kind
    key: str
    host: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    # NVIDIA OCSP: the DER OCSPRequest POSTed (the URL is its GET form), and the issuer chain an answer
    # is verified with before it is cached (not part of the resource's identity)
    post_body: bytes | None = field(default=None, compare=False, repr=False)
    issuer_chain: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.host not in ALLOWED_HOSTS:  # every constructor below passes a constant; keep it so
            raise HostNotAllowed(f"host {self.host!r} is not an allowed collateral host", host=self.host)

    @property
    def url(self) -> str:
        q = "&".join(f"{k}={v}" for k, v in self.query)
        return f"https://{self.host}{self.path}" + (f"?{q}" if q else "")


# --- builders (typed parameters only) ----------------------------------------------------------------


def _tee(tee: str) -> str:
    if tee not in ("tdx", "sgx"):
        raise UrlNotAllowed(f"unknown Intel TEE {tee!r}")
    return tee


UPDATES = ("standard", "early")


def _update(update: str | None) -> tuple[tuple[str, str], ...]:
    """PCS v4 ``update=early|standard`` (TCB Info, QE Identity): which TCB recovery event's data to get.
    ``standard`` is the PCS default and is left out of the URL, so recorded URLs keep their form."""
    if update not in (None, *UPDATES):
        raise UrlNotAllowed(f"update must be one of {UPDATES}")
    return (("update", "early"),) if update == "early" else ()


def tcb_info(tee: str, fmspc: bytes, update: str | None = None) -> Endpoint:
    if len(fmspc) != 6:
        raise UrlNotAllowed("an FMSPC is 6 bytes")
    kind = Kind.TDX_TCB_INFO if _tee(tee) == "tdx" else Kind.SGX_TCB_INFO
    return Endpoint(kind, fmspc.hex(), INTEL_PCS, f"/{tee}/certification/v4/tcb",
                    (("fmspc", fmspc.hex().upper()), *_update(update)))


def qe_identity(tee: str, update: str | None = None) -> Endpoint:
    kind = Kind.TDX_QE_IDENTITY if _tee(tee) == "tdx" else Kind.SGX_QE_IDENTITY
    return Endpoint(kind, "TD_QE" if tee == "tdx" else "QE", INTEL_PCS, f"/{tee}/certification/v4/qe/identity",
                    _update(update))


def pck_crl(ca: str) -> Endpoint:
    if ca not in ("platform", "processor"):
        raise UrlNotAllowed(f"unknown PCK CA {ca!r}")
    return Endpoint(Kind.PCK_CRL, ca, INTEL_PCS, "/sgx/certification/v4/pckcrl", (("ca", ca), ("encoding", "der")))


def root_ca_crl() -> Endpoint:
    return Endpoint(Kind.ROOT_CA_CRL, "root", INTEL_CERTS, ROOT_CA_CRL_PATH)


def _product(product: str) -> str:
    if product not in PRODUCT_LINES:
        raise UrlNotAllowed(f"unknown AMD product line {product!r}")
    return product


def vcek(product: str, hwid: bytes, tcb: AmdTcb) -> Endpoint:
    line = PRODUCT_LINES[_product(product)]
    if len(hwid) != line.hwid_len:
        raise UrlNotAllowed(f"a {product} hwID is {line.hwid_len} bytes")
    if (tcb.fmc is not None) != (product == "Turin"):
        raise UrlNotAllowed("fmcSPL is given for Turin and only for Turin")
    query = [("blSPL", f"{tcb.bl:02d}"), ("teeSPL", f"{tcb.tee:02d}"), ("snpSPL", f"{tcb.snp:02d}"),
             ("ucodeSPL", f"{tcb.ucode:02d}")]
    if tcb.fmc is not None:
        query.append(("fmcSPL", f"{tcb.fmc:02d}"))
    return Endpoint(Kind.VCEK, f"{product}/{hwid.hex()}/{tcb.key()}", AMD_KDS, f"/vcek/v1/{product}/{hwid.hex()}",
                    tuple(query))


def amd_cert_chain(product: str, signer: str = "vcek") -> Endpoint:
    kind = {"vcek": Kind.VCEK_CHAIN, "vlek": Kind.VLEK_CHAIN}.get(signer)
    if kind is None:
        raise UrlNotAllowed(f"unknown AMD signing key {signer!r}")
    return Endpoint(kind, _product(product), AMD_KDS, f"/{signer}/v1/{product}/cert_chain")


def amd_crl(product: str, signer: str = "vcek") -> Endpoint:
    kind = {"vcek": Kind.VCEK_CRL, "vlek": Kind.VLEK_CRL}.get(signer)
    if kind is None:
        raise UrlNotAllowed(f"unknown AMD signing key {signer!r}")
    return Endpoint(kind, _product(product), AMD_KDS, f"/{signer}/v1/{product}/crl")


def nvidia_ocsp(issuer_name_hash: bytes, issuer_key_hash: bytes, serial: int,
                issuer_chain: tuple[bytes, ...] = ()) -> Endpoint:
    """The OCSP request for one device certificate: a single SHA-384 CertID, no extensions (no nonce:
    the answer is kept and judged by its window, docs/nvidia-gpu.md). Cache key ``<issuerKeyHash>/<serial>``."""
    if len(issuer_name_hash) != 48 or len(issuer_key_hash) != 48:
        raise UrlNotAllowed("an NVIDIA OCSP CertID carries SHA-384 hashes")
    if not 0 < serial < 1 << 160:  # RFC 5280 4.1.2.2: positive, at most 20 octets
        raise UrlNotAllowed("a certificate serial is positive and at most 20 octets")
    der = (ocsp.OCSPRequestBuilder().add_certificate_by_hash(issuer_name_hash, issuer_key_hash, serial, hashes.SHA384())
           .build().public_bytes(Encoding.DER))
    path = "/" + quote(base64.b64encode(der).decode(), safe="")
    return Endpoint(Kind.NVIDIA_OCSP, f"{issuer_key_hash.hex()}/{serial:x}", NVIDIA_OCSP, path, (), der, issuer_chain)


def _nvidia_ocsp_path(path: str) -> Endpoint:
    try:
        der = base64.b64decode(unquote(path.removeprefix("/")), validate=True)
        req = ocsp.load_der_ocsp_request(der)
        alg, ext = req.hash_algorithm, req.extensions
        name_hash, key_hash, serial = req.issuer_name_hash, req.issuer_key_hash, req.serial_number
    except (binascii.Error, ValueError, TypeError, x509.InvalidVersion) as exc:
        raise UrlNotAllowed("the NVIDIA OCSP path is not a base64 OCSPRequest") from exc
    except Exception as exc:  # noqa: BLE001 - pyca parses lazily: an unsupported algorithm or field, any type
        raise UrlNotAllowed("the NVIDIA OCSP request cannot be read") from exc
    if not isinstance(alg, hashes.SHA384) or len(ext):
        raise UrlNotAllowed("an NVIDIA OCSP request is one SHA-384 CertID without extensions")
    ep = nvidia_ocsp(name_hash, key_hash, serial)
    if ep.path != path:
        raise UrlNotAllowed("the NVIDIA OCSP path is not in its canonical form")
    return ep


# --- the endpoint table: what a family needs -> where to ask (STYLE.md 16) ---------------------------


def endpoint_for(need: Need, *, update: str | None = None) -> Endpoint:
    """The allowlisted endpoint serving one resource an evidence family needs (``evidence/needs.py``).
    ``update`` is the Intel PCS ``update=early|standard`` choice for TCB Info and QE Identity.

    Raises:
        UrlNotAllowed (``collateral.url_not_allowed``): a parameter out of range (unknown product...).
    """
    match need:
        case needs.IntelTcbInfo(tee, fmspc):
            return tcb_info(tee, fmspc, update)
        case needs.IntelQeIdentity(tee):
            return qe_identity(tee, update)
        case needs.IntelPckCrl(ca):
            return pck_crl(ca)
        case needs.IntelRootCaCrl():
            return root_ca_crl()
        case needs.AmdVcek(product, hwid, bl, tee, snp, ucode, fmc):
            return vcek(product, hwid, AmdTcb(bl, tee, snp, ucode, fmc))
        case needs.AmdCertChain(product, signer):
            return amd_cert_chain(product, signer)
        case needs.AmdCrl(product, signer):
            return amd_crl(product, signer)
        case needs.NvidiaOcsp(name_hash, key_hash, serial, chain):
            return nvidia_ocsp(name_hash, key_hash, serial, chain)
    # NvidiaRim: sent with the evidence, not fetched yet (evidence/needs.py)
    raise UrlNotAllowed(f"no endpoint serves {type(need).__name__}")


# --- recorded URL -> endpoint ------------------------------------------------------------------------

_INTEL_TCB = re.compile(r"/(tdx|sgx)/certification/v4/tcb")
_INTEL_QE = re.compile(r"/(tdx|sgx)/certification/v4/qe/identity")
_AMD_VCEK = re.compile(r"/vcek/v1/([A-Za-z]+)/([0-9a-fA-F]+)")
_AMD_CHAIN = re.compile(r"/(vcek|vlek)/v1/([A-Za-z]+)/cert_chain")
_AMD_CRL = re.compile(r"/(vcek|vlek)/v1/([A-Za-z]+)/crl")
_DEC = re.compile(r"[0-9]{1,3}")


def _query(raw: str, allowed: set[str], required: set[str]) -> dict[str, str]:
    pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in allowed or k in out:
            raise UrlNotAllowed(f"query parameter {k!r} is not expected here")
        out[k] = v
    if not required <= out.keys():
        raise UrlNotAllowed(f"query parameters {sorted(required - out.keys())} are missing")
    return out


def _spl(q: dict[str, str], name: str) -> int:
    v = q[name]
    if not _DEC.fullmatch(v):
        raise UrlNotAllowed(f"{name} is not a decimal byte")
    return int(v)


def parse_url(url: str) -> Endpoint:
    """The endpoint a recorded vendor URL names, rebuilt from its typed parameters.

    Raises:
        HostNotAllowed (``collateral.host_not_allowed``): not https, or a host outside the allowlist.
        UrlNotAllowed (``collateral.url_not_allowed``): an allowed host, but no endpoint we know.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed("collateral URL cannot be parsed") from exc
    if parts.scheme != "https" or host not in ALLOWED_HOSTS or port not in (None, 443) or parts.username \
            or parts.password or parts.fragment:
        raise HostNotAllowed(f"{parts.scheme}://{host} is not an allowed collateral host", host=str(host))
    path, raw = parts.path, parts.query
    try:
        if host == NVIDIA_OCSP:
            _query(raw, set(), set())
            return _nvidia_ocsp_path(path)
        if host == INTEL_CERTS:
            if path == ROOT_CA_CRL_PATH:
                _query(raw, set(), set())
                return root_ca_crl()
        elif host == INTEL_PCS:
            if m := _INTEL_TCB.fullmatch(path):
                q = _query(raw, {"fmspc", "update"}, {"fmspc"})
                if not re.fullmatch(r"[0-9a-fA-F]{12}", q["fmspc"]):
                    raise UrlNotAllowed("fmspc is not 6 bytes of hex")
                return tcb_info(m.group(1), bytes.fromhex(q["fmspc"]), q.get("update"))
            if m := _INTEL_QE.fullmatch(path):
                q = _query(raw, {"update"}, set())
                return qe_identity(m.group(1), q.get("update"))
            if path == "/sgx/certification/v4/pckcrl":
                q = _query(raw, {"ca", "encoding"}, {"ca"})
                if q.get("encoding", "pem") not in ("pem", "der"):
                    raise UrlNotAllowed("PCK CRL encoding is neither pem nor der")
                return pck_crl(q["ca"])
        else:
            if m := _AMD_CHAIN.fullmatch(path):
                _query(raw, set(), set())
                return amd_cert_chain(m.group(2), m.group(1))
            if m := _AMD_CRL.fullmatch(path):
                _query(raw, set(), set())
                return amd_crl(m.group(2), m.group(1))
            if m := _AMD_VCEK.fullmatch(path):
                product = _product(m.group(1))
                turin = product == "Turin"
                names = {"blSPL", "teeSPL", "snpSPL", "ucodeSPL"} | ({"fmcSPL"} if turin else set())
                q = _query(raw, names, names)
                tcb = AmdTcb(_spl(q, "blSPL"), _spl(q, "teeSPL"), _spl(q, "snpSPL"), _spl(q, "ucodeSPL"),
                             _spl(q, "fmcSPL") if turin else None)
                return vcek(product, bytes.fromhex(m.group(2)), tcb)
    except ValueError as exc:
        raise UrlNotAllowed("collateral URL has a malformed parameter") from exc
    raise UrlNotAllowed(f"{host}{path} is not a known collateral endpoint", host=str(host))
