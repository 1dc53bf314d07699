"""``ca-service init``."""

from __future__ import annotations

import click

from ca_service.agent.tsm import TSM_ROOT
from ca_service.cli.common import settings_from_env
from ca_service.services.bootstrap import init_ca


@click.command("init")
@click.option("--write-passphrase", is_flag=True,
              help="write a generated root key passphrase beside the key (dev only; default: print it once)")
@click.option("--outside-tee", is_flag=True,
              help="production profile: initialise although no TEE is detected (keys then sit in plain host memory)")
def init(write_passphrase: bool, outside_tee: bool) -> None:
    """Create the database, the offline root, the issuing CA and service keys (idempotent)."""
    settings = settings_from_env()
    if not settings.insecure and not TSM_ROOT.exists():
        msg = ("production profile outside a TEE (no configfs-tsm at /sys/kernel/config/tsm/report): the "
               "issuing, log and EAR keys would be generated and kept in host memory and on host disk, "
               "where the host operator can read them, and /v1/ca/attestation has no evidence to offer")
        if not outside_tee:
            raise click.ClickException(
                msg + "; pass --outside-tee to do it anyway, or use CA_SERVICE_PROFILE=insecure-dev")
        click.echo(f"WARNING: {msg}", err=True)
    result = init_ca(settings, write_passphrase=write_passphrase)
    click.echo(f"profile: {settings.profile}; home: {settings.home}; database: {settings.database_url.split('@')[-1]}")
    if settings.insecure:
        click.echo("WARNING: insecure-dev profile: not running in a TEE; certificates say so", err=True)
    for note in result.notes:
        click.echo(note)
    if result.root_passphrase_file:
        click.echo(f"root key passphrase: {result.root_passphrase_file}")
    elif result.root_passphrase:
        click.echo(f"root key passphrase (shown once, not stored; keep it with the key): {result.root_passphrase}")
