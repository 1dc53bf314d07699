"""``ca-service agent request``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from ca_service.agent.client import AgentError, request_certificate, write_result
from ca_service.cli.common import settings_from_env


@click.group("agent")
def agent() -> None:
    """The CVM side: get a certificate for a fresh key with TEE evidence."""


@agent.command("request")
@click.option("--server", required=True, help="CA base URL, e.g. http://127.0.0.1:8080")
@click.option("--policy", required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--sim", is_flag=True, help="use the INSECURE sim TEE of $CA_SERVICE_HOME instead of configfs-tsm")
@click.option("--dns", "dns_names", multiple=True, help="DNS name to request in the SAN (repeatable)")
@click.option("--key-type", default="ec-p256", type=click.Choice(["ec-p256", "ec-p384", "ed25519"]))
def request(server: str, policy: str, out_dir: Path, sim: bool, dns_names: tuple[str, ...], key_type: str) -> None:
    """Challenge, key, CSR, evidence, certificate; writes key.pem, chain.pem, response.json."""
    if sim:
        from ca_service.services.bootstrap import load_sim_tee

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tee = load_sim_tee(settings_from_env())
        click.echo("WARNING: using the INSECURE sim TEE", err=True)

        def source(report_data: bytes) -> tuple[str, bytes]:
            return "sim", tee.report(report_data)  # type: ignore[attr-defined]
    else:
        from ca_service.agent.tsm import tsm_available, tsm_report

        if not tsm_available():
            raise click.ClickException("no configfs-tsm here (/sys/kernel/config/tsm/report); use --sim for dev")
        source = tsm_report
    try:
        result = request_certificate(server, policy, evidence_source=source, key_type=key_type, dns_names=dns_names)
    except AgentError as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    write_result(result, out_dir)
    r = result.response
    click.echo(f"serial {r['serial']} policy {r['policy']['name']}@{r['policy']['version']} "
               f"log index {r['log_index']} -> {out_dir}")
