"""``ca-service policy apply|list|show|activate``."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from ca_service.cli.common import open_services
from ca_service.services import policies


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@click.group("policy")
def policy() -> None:
    """Reference-value policies."""


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--activate", "do_activate", is_flag=True, help="activate the version at once")
def apply(file: Path, do_activate: bool) -> None:
    """Store FILE as a new immutable version (the same document twice is one version)."""
    svc = open_services()
    ref, created = policies.apply_policy(svc, file.read_text(), actor=_actor())
    click.echo(f"{'created' if created else 'unchanged'} {ref.policy.name}@{ref.version} sha256:{ref.policy.digest}")
    if do_activate:
        policies.activate(svc, ref.policy.name, ref.version, actor=_actor())
        click.echo(f"activated {ref.policy.name}@{ref.version}")


@policy.command("list")
def list_() -> None:
    for p in policies.list_policies(open_services()):
        click.echo(f"{p['name']}: active {p['active_version']}; versions "
                   + ", ".join(str(v["version"]) for v in p["versions"]))  # type: ignore[attr-defined,index]


@policy.command("show")
@click.argument("name")
@click.option("--version", type=int)
def show(name: str, version: int | None) -> None:
    ref = policies.get_version(open_services(), name, version)
    click.echo(json.dumps(ref.to_json(), indent=2))


@policy.command("activate")
@click.argument("name")
@click.argument("version", type=int)
def activate(name: str, version: int) -> None:
    """Point NAME at VERSION (rollback is activating an older version)."""
    ref = policies.activate(open_services(), name, version, actor=_actor())
    click.echo(f"activated {ref.policy.name}@{ref.version} sha256:{ref.policy.digest}")
