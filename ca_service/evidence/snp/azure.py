"""Azure confidential VMs: the HCL ("paravisor") report that wraps the SNP report.

An Azure SNP CVM guest cannot choose the SNP REPORT_DATA itself. The HCL firmware writes a
runtime-data JSON (its vTPM keys ``HCLAkPub``/``HCLEkPub``, the VM configuration and 64 bytes of
guest ``user-data``) and asks the PSP for a report whose REPORT_DATA is the hash of that JSON. The
vTPM NV index 0x01400001 exposes the result, laid out as (little-endian):

=========  ======  =============================================================================
offset     size    field
=========  ======  =============================================================================
0x000      32      header: signature "HCLA", version, report_size, request_type, status, reserved
0x020      0x4A0   hardware report: the SNP ATTESTATION_REPORT (ABI spec Table 23)
0x4C0      20      runtime data header: data_size, version, report_type (2 = SNP), hash_type
                   (1 SHA-256, 2 SHA-384, 3 SHA-512), variable_data_size
0x4D4      var     runtime data: the JSON document, exactly the hashed bytes
=========  ======  =============================================================================

The binding checked here: REPORT_DATA[0:n] == hash(runtime data) and the rest of REPORT_DATA is
zero. Once the SNP report verifies, the runtime claims (keys, configuration, user data) are as
genuine as the report. The TPM quote signed by HCLAkPub is a separate item and not checked here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

from ca_service import boundedjson
from ca_service.errors import EvidenceMalformed, EvidenceUnsupported, ReportDataMismatch
from ca_service.evidence.snp.parse import REPORT_SIZE

HCL_MAGIC = b"HCLA"
HCL_VERSIONS = frozenset({1, 2})  # the header versions seen in Azure's reports (Milan v1, Genoa v2)
_HEADER = 0x20
_RUNTIME_HEADER = _HEADER + REPORT_SIZE
_RUNTIME_HEADER_SIZE = 20
_VAR_DATA = _RUNTIME_HEADER + _RUNTIME_HEADER_SIZE
REPORT_TYPE_SNP = 2
_HASHES = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}
_HASH_NAMES = {1: "sha256", 2: "sha384", 3: "sha512"}
MAX_RUNTIME_DATA = 64 * 1024


def is_hcl_report(data: bytes) -> bool:
    return data[:4] == HCL_MAGIC


@dataclass(frozen=True)
class HclReport:
    raw: bytes
    version: int
    snp_report: bytes
    hash_type: int
    runtime_data: bytes
    runtime: dict[str, Any]

    @property
    def user_data(self) -> bytes:
        value = self.runtime.get("user-data")
        if not isinstance(value, str):
            raise EvidenceMalformed("HCL runtime data has no user-data string")
        try:
            out = binascii.unhexlify(value)
        except (binascii.Error, ValueError) as exc:
            raise EvidenceMalformed("HCL runtime user-data is not hex") from exc
        if len(out) != 64:
            raise EvidenceMalformed("HCL runtime user-data is not 64 bytes")
        return out

    def check_binding(self, report_data: bytes) -> str:
        """Check that the SNP REPORT_DATA binds the runtime data; return a description.

        Raises:
            ReportDataMismatch (``evidence.report_data_mismatch``): it does not.
        """
        digest = _HASHES[self.hash_type](self.runtime_data).digest()
        n = len(digest)
        if not hmac.compare_digest(report_data[:n], digest) or any(report_data[n:]):
            raise ReportDataMismatch("SNP report data does not bind the HCL runtime data")
        return f"report_data = {_HASH_NAMES[self.hash_type]}(runtime data) || zeros"

    def claims(self) -> dict[str, Any]:
        keys = []
        for jwk in self.runtime.get("keys", []):
            if not isinstance(jwk, dict):
                raise EvidenceMalformed("HCL runtime key is not a JSON object")
            keys.append(
                {
                    **{k: jwk[k] for k in ("kid", "kty", "key_ops", "n", "e", "crv", "x", "y") if k in jwk},
                    "thumbprint_sha256": jwk_thumbprint(jwk),
                }
            )
        # No claim from the 32-byte HCL header: it is not signed (nothing binds it to the SNP report),
        # so an attacker could set it to anything the parser accepts.
        return {
            "runtime_data_sha256": hashlib.sha256(self.runtime_data).hexdigest(),
            "runtime_data_hash": _HASH_NAMES[self.hash_type],
            "runtime_keys": keys,
            "vm_configuration": self.runtime.get("vm-configuration"),
            "user_data": self.user_data.hex(),
        }


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an RSA or EC JWK."""
    kty = jwk.get("kty")
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}.get(str(kty))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise EvidenceMalformed(f"HCL runtime key of type {kty!r} is not an RSA or EC JWK")
    canon = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def parse_hcl_report(data: bytes) -> HclReport:
    """Unwrap an Azure HCL report.

    Raises:
        EvidenceMalformed: truncated, sizes inconsistent, runtime data not a JSON object.
        EvidenceUnsupported: an unknown header version, the hardware report is not SNP (e.g. TDX), or an
            unknown hash type.
    """
    if not is_hcl_report(data):
        raise EvidenceMalformed("not an HCL report (no HCLA signature)")
    if len(data) < _VAR_DATA:
        raise EvidenceMalformed(f"HCL report truncated: {len(data)} bytes")
    version = struct.unpack_from("<I", data, 4)[0]
    if version not in HCL_VERSIONS:
        raise EvidenceUnsupported(f"HCL report version {version} is not supported")
    data_size, _rt_version, report_type, hash_type, var_size = struct.unpack_from(
        "<5I", data, _RUNTIME_HEADER
    )
    if report_type != REPORT_TYPE_SNP:
        raise EvidenceUnsupported(f"HCL hardware report type {report_type} is not SEV-SNP")
    if hash_type not in _HASHES:
        raise EvidenceUnsupported(f"HCL runtime data hash type {hash_type} is not supported")
    if var_size > MAX_RUNTIME_DATA or data_size != var_size + _RUNTIME_HEADER_SIZE:
        raise EvidenceMalformed("HCL runtime data sizes are inconsistent")
    if _VAR_DATA + var_size > len(data):
        raise EvidenceMalformed("HCL runtime data runs past the end of the report")
    runtime_data = data[_VAR_DATA : _VAR_DATA + var_size]
    if any(data[_VAR_DATA + var_size :]):
        # Nothing signs the padding: only zeros keep the evidence bytes canonical.
        raise EvidenceMalformed("HCL report has non-zero bytes after the runtime data")
    try:
        runtime = boundedjson.loads(runtime_data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceMalformed("HCL runtime data is not JSON") from exc
    if not isinstance(runtime, dict):
        raise EvidenceMalformed("HCL runtime data is not a JSON object")
    return HclReport(
        raw=data,
        version=int(version),
        snp_report=data[_HEADER:_RUNTIME_HEADER],
        hash_type=int(hash_type),
        runtime_data=runtime_data,
        runtime=runtime,
    )
