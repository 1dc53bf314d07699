"""``ca-service agent request``: ask the CA for a certificate bound to a fresh key."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value


class AgentError(Exception):
    """The request failed; ``problem`` holds the server's problem+json when there is one."""

    def __init__(self, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class AgentResult:
    key_pem: bytes
    chain_pem: str
    response: dict[str, Any]


def _new_key(key_type: str) -> Any:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported key type {key_type}")


def make_csr(key: Any, dns_names: tuple[str, ...]) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "cvm")]))
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                        critical=False)
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algo)


def _post(session: requests.Session, url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    try:
        resp = session.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise AgentError(f"cannot reach {url}: {type(exc).__name__}") from exc
    try:
        data: dict[str, Any] = resp.json()
    except ValueError as exc:
        raise AgentError(f"{url} answered {resp.status_code} without JSON") from exc
    if resp.status_code >= 400:
        raise AgentError(f"{url} refused: [{data.get('code')}] {data.get('detail')}", data)
    return data


def evidence_needs(server: str, policy: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """``GET /v1/attestations/needs?policy=``: the types and event logs the active policy needs; None
    when the server does not offer it (an older CA)."""
    try:
        resp = requests.get(f"{server.rstrip('/')}/v1/attestations/needs", params={"policy": policy},
                            timeout=timeout)
    except requests.RequestException as exc:
        raise AgentError(f"cannot reach {server}: {type(exc).__name__}") from exc
    if resp.status_code == 404 and resp.headers.get("Content-Type", "").startswith("text/html"):
        return None
    try:
        data: dict[str, Any] = resp.json()
    except ValueError as exc:
        raise AgentError(f"{server} answered {resp.status_code} without JSON") from exc
    if resp.status_code >= 400:
        raise AgentError(f"policy {policy!r}: [{data.get('code')}] {data.get('detail')}", data)
    return data


def request_certificate(server: str, policy: str, *, evidence_source: Any, key_type: str = "ec-p256",
                        dns_names: tuple[str, ...] = (), timeout: float = 30.0,
                        cvm_serial: str | None = None) -> AgentResult:
    """Run flow 1. ``evidence_source(report_data: bytes)`` is the TEE: it returns ``(type, bytes)``, or
    ``(type, bytes, extra)`` where ``extra`` adds fields to the evidence item (``event_log``,
    ``collateral``: base64 strings, docs/event-log.md), or a list of those (CPU and GPU items).
    ``cvm_serial``: a loader names the CVM certificate it links to (docs/loader.md)."""
    server = server.rstrip("/")
    with requests.Session() as http:
        challenge = _post(http, f"{server}/v1/challenges", None, timeout)
        key = _new_key(key_type)
        csr = make_csr(key, dns_names)
        report_data = binding_value(bytes.fromhex(challenge["nonce"]), spki_der(key.public_key()))
        got = evidence_source(report_data)
        items: list[dict[str, Any]] = []
        for one in (got if isinstance(got, list) else [got]):  # CPU evidence, then any GPUs
            item: dict[str, Any] = {"type": one[0], "data": base64.b64encode(one[1]).decode()}
            if len(one) > 2:
                item.update(one[2])
            items.append(item)
        body: dict[str, Any] = {
            "challenge_id": challenge["id"],
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
            "policy": policy,
            "evidence": items,
        }
        if cvm_serial is not None:
            body["cvm_serial"] = cvm_serial
        response = _post(http, f"{server}/v1/certificates", body, timeout)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return AgentResult(key_pem=key_pem, chain_pem=response["certificate_chain"], response=response)


def write_result(result: AgentResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(result.key_pem)
    (out / "chain.pem").write_text(result.chain_pem)
    (out / "response.json").write_text(json.dumps(result.response, indent=2) + "\n")
