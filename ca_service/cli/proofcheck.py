"""The log-proof and anchor part of ``ca-service verify``."""

from __future__ import annotations

import hashlib
from typing import Any

import click
from cryptography import x509

from ca_service.ca.verify import CertificateReport, check_log_proof


def check_proof(report: CertificateReport, leaf: x509.Certificate, bundle_text: str, vkey: str | None,
                rpc: str | None, contract: str | None = None) -> None:
    if not vkey:
        raise click.UsageError("--proof needs --log-vkey (the log's key, from GET /v1/log/vkey, kept by you)")
    cp = check_log_proof(report, leaf, bundle_text, vkey)
    if cp is None or rpc is None:
        return
    if not contract:
        raise click.UsageError("--rpc needs --contract (the anchor contract address, from GET /v1/anchors)")
    from ca_service.anchor.chain import ChainClient
    from ca_service.errors import CAServiceError

    try:
        chain = ChainClient.reader(rpc)
    except CAServiceError as exc:
        report.add("anchor", False, f"[{exc.code}] {exc.detail}")
        return
    check_anchor(report, chain, contract, cp, bundle_text.partition("\n\n")[2])


def check_anchor(report: CertificateReport, chain: Any, contract: str, cp: Any, note: str) -> bool:
    """The chain's Anchored event for the checkpoint's size holds its root and the note's SHA-256."""
    from ca_service.errors import CAServiceError

    try:
        ev = chain.find_anchor_event(contract, cp.size)
    except CAServiceError as exc:
        return report.add("anchor", False, f"[{exc.code}] {exc.detail}")
    ok = (ev is not None and ev.root == cp.root_hash
          and ev.checkpoint_hash == hashlib.sha256(note.encode()).digest())
    return report.add("anchor", ok, f"checkpoint of size {cp.size} anchored in block {ev.block_number}"
                      if ok and ev else f"no matching anchor for size {cp.size} on {contract}")
