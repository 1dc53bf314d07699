"""``ca-service verify CERT_FILE``: the relying party's offline check."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from cryptography import x509

from ca_service.ca.verify import verify_certificate


@click.command("verify")
@click.argument("cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", "root_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the CA root you trust (PEM); default $CA_SERVICE_HOME/root.pem")
@click.option("--proof", "proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a tlog-proof@v1 bundle for the certificate")
@click.option("--log-vkey", help="the log's note verifier key (name+id+key); required with --proof")
@click.option("--rpc", help="EVM JSON-RPC URL to check the anchor covering the proof")
@click.option("--contract", help="the anchor contract address (with --rpc)")
@click.option("--at", "at_text", help="RFC 3339 time to verify at (default now)")
@click.option("--accept-insecure", is_flag=True, help="accept certificates from the insecure-dev profile")
@click.option("--json", "as_json", is_flag=True)
def verify(cert_file: Path, root_file: Path | None, proof_file: Path | None, log_vkey: str | None, rpc: str | None,
           contract: str | None, at_text: str | None, accept_insecure: bool, as_json: bool) -> None:
    """Verify a certificate chain (leaf first) against a pinned root, its EAR, and its log proof."""
    from ca_service.config import Settings

    at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else datetime.now(UTC)
    chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
    root_path = root_file or Settings.from_env().home / "root.pem"
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    chain = [c for c in chain if c != root]
    report = verify_certificate(chain, root, at, accept_insecure=accept_insecure)
    if proof_file is not None:
        from ca_service.cli.proofcheck import check_proof

        check_proof(report, chain[0], proof_file.read_text(), log_vkey, rpc, contract)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for c in report.checks:
            click.echo(f"[{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        click.echo("PASS" if report.passed else "FAIL")
    sys.exit(0 if report.passed else 1)
