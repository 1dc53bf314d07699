"""``ca-service agent request``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
@click.option("--event-log", "event_log", default="auto", show_default=True,
              type=click.Choice(["auto", "always", "never"]),
              help="send the TD's CCEL event log: auto = when the policy needs it (asked of the CA)")
@click.option("--gpu", default="auto", show_default=True, type=click.Choice(["auto", "always", "never"]),
              help="add NVIDIA GPU evidence (NVML): auto = when the policy requires nvidia-gpu")
@click.option("--tsm-root", type=click.Path(path_type=Path), default=None,
              help="configfs-tsm report directory (default /sys/kernel/config/tsm/report)")
@click.option("--ccel", "ccel_path", type=click.Path(path_type=Path), default=None,
              help="the CCEL log file (default /sys/firmware/acpi/tables/data/CCEL)")
def request(server: str, policy: str, out_dir: Path, sim: bool, dns_names: tuple[str, ...], key_type: str,
            event_log: str, gpu: str, tsm_root: Path | None, ccel_path: Path | None) -> None:
    """Challenge, key, CSR, evidence, certificate; writes key.pem, chain.pem, response.json.

    On a TEE the evidence comes from configfs-tsm (TDX quote or SNP report, by provider); a TDX
    agent adds the CCEL event log when the policy needs it (docs/event-log.md)."""
    notes: list[str] = []
    source: Any
    if sim:
        from ca_service.agent import simtd
        from ca_service.agent.loader import sim_source

        # a CVM boot: the sim TD starts over from its measured boot; its event log goes with the report
        td = simtd.boot(settings_from_env())
        click.echo("WARNING: using the INSECURE sim TEE", err=True)
        source = sim_source(td)
    else:
        from ca_service.agent.client import evidence_needs
        from ca_service.agent.tee import TsmEvidenceSource
        from ca_service.agent.tsm import CCEL_PATH, TSM_ROOT, tsm_available

        root = tsm_root or TSM_ROOT
        if not tsm_available(root):
            raise click.ClickException(f"no configfs-tsm here ({root}); use --sim for dev")
        try:
            needs = evidence_needs(server, policy) if "auto" in (event_log, gpu) else None
        except AgentError as exc:
            click.echo(f"refused: {exc}", err=True)
            sys.exit(1)
        if "auto" in (event_log, gpu) and needs is None:
            click.echo("note: the CA does not say what the policy needs; sending no event log and no GPU evidence",
                       err=True)
        tee_source = TsmEvidenceSource(needs=needs, event_log=event_log, root=root, ccel_path=ccel_path or CCEL_PATH,
                                       gpu=gpu)
        notes = tee_source.notes
        source = tee_source
    try:
        result = request_certificate(server, policy, evidence_source=source, key_type=key_type, dns_names=dns_names)
    except AgentError as exc:
        for note in notes:
            click.echo(note, err=True)
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    for note in notes:
        click.echo(note)
    write_result(result, out_dir)
    r = result.response
    click.echo(f"serial {r['serial']} policy {r['policy']['name']}@{r['policy']['version']} "
               f"log index {r['log_index']} -> {out_dir}")


@agent.command("loader-request")
@click.option("--server", required=True, help="CA base URL, e.g. http://127.0.0.1:8080")
@click.option("--policy", required=True, help="the loader policy, e.g. trusted-loader")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--component", "components", multiple=True,
              help="ROLE=PATH (SHA-384 of the file) or ROLE=sha384:<hex>, measured into RTMR3 in this order "
                   "before the request (repeatable): e.g. engine=./engine.img")
@click.option("--arguments", help="the arguments the workload runs with: measured as role args (SHA-384 of the UTF-8), "
                                  "the digest `integrity sign --arguments` reports")
@click.option("--sim", is_flag=True, help="the INSECURE sim TD of $CA_SERVICE_HOME (booted by `agent request --sim`)")
@click.option("--cvm-serial", help="the CVM certificate to link to (default: the CA picks this TD's newest valid one)")
@click.option("--dns", "dns_names", multiple=True, help="DNS name to request in the SAN (repeatable)")
@click.option("--key-type", default="ec-p256", type=click.Choice(["ec-p256", "ec-p384", "ed25519"]))
@click.option("--tsm-root", type=click.Path(path_type=Path), default=None,
              help="TDX: configfs-tsm report directory (default /sys/kernel/config/tsm/report)")
@click.option("--ccel", "ccel_path", type=click.Path(path_type=Path), default=None,
              help="TDX: the CCEL log file (default /sys/firmware/acpi/tables/data/CCEL)")
@click.option("--rtmr3", "rtmr3_path", type=click.Path(path_type=Path), default=None,
              help="TDX: the RTMR3 extend attribute (default /sys/devices/virtual/misc/tdx_guest/measurements/"
                   "rtmr3:sha384)")
@click.option("--runtime-log", type=click.Path(path_type=Path), default=None,
              help="TDX: where the loader keeps its RTMR3 events (default /run/ca-service/rtmr3-events.json)")
def loader_request(server: str, policy: str, out_dir: Path, components: tuple[str, ...], arguments: str | None,
                   sim: bool, cvm_serial: str | None, dns_names: tuple[str, ...], key_type: str,
                   tsm_root: Path | None, ccel_path: Path | None, rtmr3_path: Path | None,
                   runtime_log: Path | None) -> None:
    """The trusted loader's certificate: measure what it loads into RTMR3, then challenge, a fresh key of
    its own, CSR, evidence with the event log; writes key.pem, chain.pem, response.json (docs/loader.md)."""
    import hashlib

    from ca_service.agent.loader import Measured, measure_into, parse_component, sim_source

    try:
        measured = [parse_component(c) for c in components]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--component") from exc
    if arguments is not None:
        measured.append(Measured("args", "sha384:" + hashlib.sha384(arguments.encode()).hexdigest()))
    notes: list[str] = []
    source: Any
    if sim:
        from ca_service.agent import simtd

        settings = settings_from_env()
        td = simtd.current(settings)
        measure_into(td, measured)
        simtd.save(td, simtd.state_file(settings))
        click.echo("WARNING: using the INSECURE sim TEE", err=True)
        for m in measured:
            click.echo(f"measured {m.role} {m.digest} into RTMR3", err=True)
        source = sim_source(td)
    else:
        from ca_service.agent import tdx_loader
        from ca_service.agent.tsm import CCEL_PATH, TSM_ROOT, tsm_available

        root = tsm_root or TSM_ROOT
        if not tsm_available(root):
            raise click.ClickException(f"no configfs-tsm here ({root}); use --sim for dev")
        log = runtime_log or tdx_loader.RUNTIME_LOG
        try:
            for note in tdx_loader.measure(measured, rtmr3=rtmr3_path or tdx_loader.RTMR3_PATH, log=log):
                click.echo(note, err=True)
        except AgentError as exc:
            click.echo(f"refused: {exc}", err=True)
            sys.exit(1)
        tdx_source = tdx_loader.TdxLoaderSource(root=root, ccel_path=ccel_path or CCEL_PATH, runtime_log=log)
        notes = tdx_source.notes
        source = tdx_source
    try:
        result = request_certificate(server, policy, evidence_source=source, key_type=key_type,
                                     dns_names=dns_names, cvm_serial=cvm_serial)
    except AgentError as exc:
        for note in notes:
            click.echo(note, err=True)
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    for note in notes:
        click.echo(note, err=True)
    write_result(result, out_dir)
    r = result.response
    cvm = r.get("ear", {}).get("ca-service.cvm-serial")
    click.echo(f"serial {r['serial']} policy {r['policy']['name']}@{r['policy']['version']} "
               f"linked to CVM certificate {cvm} log index {r['log_index']} -> {out_dir}")
