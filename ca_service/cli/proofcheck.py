"""The log-proof and anchor part of ``ca-service verify`` (and the anchor of ``integrity verify --rpc``)."""

from __future__ import annotations

from typing import Any

import click
from cryptography import x509


def check_proof(report: Any, leaf: x509.Certificate, bundle_text: str | None, vkey: str | None,
                rpc: str | None, contract: str | None = None, *, server: str | None = None,
                fetch: Any = None) -> None:
    """The log inclusion of ``leaf`` under a checkpoint signed by ``vkey`` and, with ``rpc``, the
    anchor covering it (``ca_service.relying_party.transparency``)."""
    if not vkey:
        raise click.UsageError("--proof and --rpc need --log-vkey (the log's key, from GET /v1/log/vkey, kept by you)")
    from ca_service.relying_party.revocation import requests_fetcher
    from ca_service.relying_party.transparency import LogTrust, check_transparency

    chain = None
    if rpc is not None:
        chain = open_chain(report, rpc)
        if chain is None:
            return
    log_index = None
    ear = getattr(report, "ear", None)
    if isinstance(ear, dict) and isinstance(ear.get("ca-service.log-index"), int):
        log_index = ear["ca-service.log-index"]
    check_transparency(report, leaf, LogTrust(vkey, chain, contract), fetch=fetch or requests_fetcher(),
                       server=server.rstrip("/") if server else None, bundle_text=bundle_text, log_index=log_index)


def open_chain(report: Any, rpc: str) -> Any:
    """A reader of the chain at ``rpc`` (an EVM JSON-RPC URL, or ``embedded``: the CA's local chain in
    CA_SERVICE_HOME, demo and development only); None, with a failed ``anchor`` step, when it cannot
    be read."""
    from ca_service.anchor.chain import ChainClient
    from ca_service.errors import CAServiceError

    try:
        if rpc == "embedded":
            from ca_service.anchor.chain import existing_embedded_chain
            from ca_service.config import Settings

            home = Settings.from_env().home
            chain = existing_embedded_chain(home)
            if chain is None:
                report.add("anchor", False, f"no embedded chain in {home} (CA_SERVICE_HOME)")
            return chain
        return ChainClient.reader(rpc)
    except CAServiceError as exc:
        report.add("anchor", False, f"[{exc.code}] {exc.detail}")
        return None
