"""The vendor side of the tests: the real vectors' collateral as Intel PCS v4 and AMD KDS served it.

This is what the loopback replay server (``tests/collateral/replay.py``) serves in place of the vendors.
Operators make bundles with the shipped command, ``ca-service collateral fetch --for EVIDENCE... BUNDLE``
(or ``collateral export``), and the tests make theirs the same way against the replay server
(``tests/integration/test_collateral_bundles.py``).

Usage: ``python -m tests.collateral.make_bundle OUT.json`` (or :func:`build_bundle` from tests).

Derivation (nothing is re-signed; every signed byte is the vector's own):
- Intel TCB Info: ``GET /{tdx|sgx}/certification/v4/tcb?fmspc=`` -> body
  ``{"tcbInfo":<tcb_info_body.json, exact bytes>,"signature":"<tcb_info_signature.hex>"}``, header
  ``TCB-Info-Issuer-Chain`` = URL-encoded ``tcb_info_issuer_chain.pem``. The TEE and FMSPC come from
  the signed body.
- Intel QE Identity: ``GET /{tdx|sgx}/certification/v4/qe/identity`` -> ``{"enclaveIdentity":...,
  "signature":...}``, header ``SGX-Enclave-Identity-Issuer-Chain``; the TEE from the body's id.
- PCK CRL: ``GET /sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der`` -> ``pck_crl.der``,
  header ``SGX-PCK-CRL-Issuer-Chain``; the CA from the issuer chain's leaf CN.
- Root CA CRL: ``https://certificates.trustedservices.intel.com/IntelSGXRootCA.der`` -> ``root_ca_crl.der``.
- AMD: ``/vcek/v1/{product}/{hwid}?blSPL..`` -> ``vcek.der`` (product, hwID and SPLs from its own
  extensions); ``/{vcek|vlek}/v1/{product}/cert_chain`` -> ``cert_chain.pem``; ``/vcek/v1/{product}/crl``
  -> ``crl.der``. VLEKs are not published by KDS and are left out.

``fetched_at`` is the item's own issue time (when a recorder running then would have fetched it), and
items are listed in that order, as a recorder appends them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import AmdTcb
from ca_service.evidence.snp.certs import common_name, parse_vek
from ca_service.evidence.snp.parse import SigningKey
from tests.vectors.manifest import vectors_dir

_PCK_CA = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}


def _rfc3339(dt: Any) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _entry(url: str, body: bytes, headers: dict[str, str], fetched_at: str) -> dict[str, Any]:
    return {"url": url, "status": 200, "headers": headers, "body_b64": base64.b64encode(body).decode(),
            "fetched_at": fetched_at}


def intel_entries(coll: Path) -> list[dict[str, Any]]:
    out = []
    tcb_body = (coll / "tcb_info_body.json").read_bytes()
    tcb = json.loads(tcb_body)
    tee = "tdx" if tcb["id"] == "TDX" else "sgx"
    body = b'{"tcbInfo":' + tcb_body + b',"signature":"' + (coll / "tcb_info_signature.hex").read_bytes().strip() + b'"}'
    out.append(_entry(endpoints.tcb_info(tee, bytes.fromhex(tcb["fmspc"])).url, body,
                      {"Content-Type": "application/json",
                       "TCB-Info-Issuer-Chain": quote((coll / "tcb_info_issuer_chain.pem").read_text(), safe="")},
                      tcb["issueDate"]))
    qe_body = (coll / "qe_identity_body.json").read_bytes()
    qe = json.loads(qe_body)
    body = (b'{"enclaveIdentity":' + qe_body + b',"signature":"'
            + (coll / "qe_identity_signature.hex").read_bytes().strip() + b'"}')
    out.append(_entry(endpoints.qe_identity("tdx" if qe["id"] == "TD_QE" else "sgx").url, body,
                      {"Content-Type": "application/json", "SGX-Enclave-Identity-Issuer-Chain":
                       quote((coll / "qe_identity_issuer_chain.pem").read_text(), safe="")},
                      qe["issueDate"]))
    chain_pem = (coll / "pck_crl_issuer_chain.pem").read_text()
    ca = _PCK_CA[common_name(x509.load_pem_x509_certificates(chain_pem.encode())[0].subject)]
    pck = (coll / "pck_crl.der").read_bytes()
    out.append(_entry(endpoints.pck_crl(ca).url, pck,
                      {"Content-Type": "application/pkix-crl", "SGX-PCK-CRL-Issuer-Chain": quote(chain_pem, safe="")},
                      _rfc3339(x509.load_der_x509_crl(pck).last_update_utc)))
    root = (coll / "root_ca_crl.der").read_bytes()
    out.append(_entry(endpoints.root_ca_crl().url, root, {"Content-Type": "application/pkix-crl"},
                      _rfc3339(x509.load_der_x509_crl(root).last_update_utc)))
    return out


def amd_entries(vec: Path) -> list[dict[str, Any]]:
    out = []
    chain_pem = (vec / "cert_chain.pem").read_bytes()
    chain = x509.load_pem_x509_certificates(chain_pem)
    inter = next(c for c in chain if common_name(c.subject) != common_name(c.issuer))
    signer = "vlek" if common_name(inter.subject).startswith("SEV-VLEK-") else "vcek"
    product = common_name(inter.issuer).removeprefix("ARK-")
    out.append(_entry(endpoints.amd_cert_chain(product, signer).url, chain_pem,
                      {"Content-Type": "application/x-pem-file"}, _rfc3339(inter.not_valid_before_utc)))
    if (vec / "crl.der").exists():
        crl = (vec / "crl.der").read_bytes()
        out.append(_entry(endpoints.amd_crl(product, signer).url, crl, {"Content-Type": "application/pkix-crl"},
                          _rfc3339(x509.load_der_x509_crl(crl).last_update_utc)))
    if (vec / "vcek.der").exists():
        der = (vec / "vcek.der").read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AMD's non-positive serials (vectors README)
            cert = x509.load_der_x509_certificate(der)
            vek = parse_vek(cert)
        assert vek.key_type is SigningKey.VCEK and vek.hwid is not None
        tcb = AmdTcb(vek.bl, vek.tee, vek.snp, vek.ucode, vek.fmc if vek.product_line_name == "Turin" else None)
        out.append(_entry(endpoints.vcek(vek.product_line_name, vek.hwid, tcb).url, der,
                          {"Content-Type": "application/pkix-cert"}, _rfc3339(cert.not_valid_before_utc)))
    return out


def build_bundle(root: Path | None = None) -> list[dict[str, Any]]:
    root = root or vectors_dir()
    entries: list[dict[str, Any]] = []
    for coll in sorted([*root.glob("tdx/*/collateral*"), *root.glob("sgx/*/collateral*")]):
        if (coll / "tcb_info_body.json").exists():
            entries += intel_entries(coll)
    for vec in sorted(root.glob("snp/*")):
        if (vec / "cert_chain.pem").exists():
            entries += amd_entries(vec)
    seen: set[tuple[str, str]] = set()
    unique = []
    for e in entries:
        k = (e["url"], hashlib.sha256(e["body_b64"].encode()).hexdigest())
        if k not in seen:
            seen.add(k)
            unique.append(e)
    unique.sort(key=lambda e: e["fetched_at"])  # stable: chronological, as recorded
    return unique


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.collateral.make_bundle OUT.json", file=sys.stderr)
        return 2
    Path(argv[1]).write_text(json.dumps(build_bundle(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
