"""The log-proof and anchor part of ``ca-service verify``."""

from __future__ import annotations

import hashlib
from typing import Any

import click
from cryptography import x509

from ca_service.ca.verify import CertificateReport


def check_proof(report: Any, leaf: x509.Certificate, bundle_text: str | None, vkey: str | None,
                rpc: str | None, contract: str | None = None, *, server: str | None = None,
                fetch: Any = None) -> None:
    """The log inclusion of ``leaf`` under a checkpoint signed by ``vkey`` and, with ``rpc``, the
    anchor covering it (``ca_service.relying_party.transparency``)."""
    if not vkey:
        raise click.UsageError("--proof and --rpc need --log-vkey (the log's key, from GET /v1/log/vkey, kept by you)")
    from ca_service.errors import CAServiceError
    from ca_service.relying_party.revocation import requests_fetcher
    from ca_service.relying_party.transparency import LogTrust, check_transparency

    chain = None
    if rpc is not None:
        from ca_service.anchor.chain import ChainClient

        try:
            if rpc == "embedded":  # the CA's local chain in CA_SERVICE_HOME (demo and development only)
                from ca_service.anchor.chain import existing_embedded_chain
                from ca_service.config import Settings

                home = Settings.from_env().home
                chain = existing_embedded_chain(home)
                if chain is None:
                    report.add("anchor", False, f"no embedded chain in {home} (CA_SERVICE_HOME)")
                    return
            else:
                chain = ChainClient.reader(rpc)
        except CAServiceError as exc:
            report.add("anchor", False, f"[{exc.code}] {exc.detail}")
            return
    log_index = None
    ear = getattr(report, "ear", None)
    if isinstance(ear, dict) and isinstance(ear.get("ca-service.log-index"), int):
        log_index = ear["ca-service.log-index"]
    check_transparency(report, leaf, LogTrust(vkey, chain, contract), fetch=fetch or requests_fetcher(),
                       server=server.rstrip("/") if server else None, bundle_text=bundle_text, log_index=log_index)


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
