"""``ca-service policy apply|list|show|diff|activate|retire|dry-run``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ca_service.cli.common import actor, open_services
from ca_service.services import dryrun, policies


@click.group("policy")
def policy() -> None:
    """Reference-value policies."""


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--activate", "do_activate", is_flag=True, help="activate the version at once")
def apply(file: Path, do_activate: bool) -> None:
    """Store FILE as a new immutable version (the same document twice is one version)."""
    svc = open_services()
    ref, created = policies.apply_policy(svc, file.read_text(), actor=actor())
    click.echo(f"{'created' if created else 'unchanged'} {ref.policy.name}@{ref.version} sha256:{ref.policy.digest}")
    if do_activate:
        policies.activate(svc, ref.policy.name, ref.version, actor=actor())
        click.echo(f"activated {ref.policy.name}@{ref.version}")


@policy.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every policy, its active version and its versions (R: retired)."""
    rows = policies.list_policies(open_services())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for p in rows:
        versions = ", ".join(f"{v['version']}{'R' if v['retired_at'] else ''}" for v in p["versions"])
        click.echo(f"{p['name']}: active {p['active_version']}; versions {versions}")


@policy.command("show")
@click.argument("name")
@click.option("--version", type=int, help="a version (default: the active one)")
def show(name: str, version: int | None) -> None:
    """Print a version with its digest and document."""
    ref = policies.get_version(open_services(), name, version)
    click.echo(json.dumps(ref.to_json(), indent=2))


@policy.command("diff")
@click.argument("name")
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@click.option("--json", "as_json", is_flag=True)
def diff(name: str, old: int, new: int | None, as_json: bool) -> None:
    """What changes from version OLD to NEW (default: the latest version)."""
    a, b, changes = policies.diff_versions(open_services(), name, old, new)
    if as_json:
        click.echo(json.dumps({"from": a.version, "to": b.version, "changes": [c.to_json() for c in changes]},
                              indent=2))
        return
    click.echo(f"--- {name}@{a.version} sha256:{a.policy.digest}")
    click.echo(f"+++ {name}@{b.version} sha256:{b.policy.digest}")
    for c in changes:
        if c.op == "removed":
            click.echo(f"- {c.path}: {json.dumps(c.before)}")
        elif c.op == "added":
            click.echo(f"+ {c.path}: {json.dumps(c.after)}")
        else:
            click.echo(f"~ {c.path}: {json.dumps(c.before)} -> {json.dumps(c.after)}")
    if not changes:
        click.echo("(no changes)")


@policy.command("activate")
@click.argument("name")
@click.argument("version", type=int)
def activate(name: str, version: int) -> None:
    """Point NAME at VERSION (rollback is activating an older version)."""
    ref = policies.activate(open_services(), name, version, actor=actor())
    click.echo(f"activated {ref.policy.name}@{ref.version} sha256:{ref.policy.digest}")


@policy.command("retire")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--revoke", is_flag=True, help="also revoke the valid certificates this version admitted")
@click.option("--reason", type=click.Choice(policies.RETIRE_REASONS), default="superseded")
def retire(name: str, version: int, revoke: bool, reason: str) -> None:
    """Retire VERSION of NAME: it can no longer be activated."""
    result = policies.retire(open_services(), name, version, actor=actor(), revoke=revoke, reason=reason)
    click.echo(f"retired {name}@{version}; revoked {len(result.revoked)} certificate(s)")
    for serial in result.revoked:
        click.echo(f"  revoked {serial} ({reason})")


@policy.command("dry-run")
@click.argument("name")
@click.option("--version", type=int, help="a stored candidate version (default: the latest)")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an unstored candidate document")
@click.option("--serial", "serials", multiple=True, help="re-appraise these certificates (default: recent ones)")
@click.option("--limit", type=int, default=dryrun.DEFAULT_LIMIT, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dry_run(name: str, version: int | None, file: Path | None, serials: tuple[str, ...], limit: int,
            as_json: bool) -> None:
    """Re-appraise recorded evidence against a candidate; changes nothing. Exit 1 if any would fail."""
    report = dryrun.dry_run(open_services(), name, actor=actor(), version=version,
                            source=file.read_text() if file else None, serials=list(serials) or None, limit=limit)
    out = report.to_json()
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"{name} candidate {out['candidate']['version'] or 'document'} "
                   f"sha256:{report.candidate_digest}: examined {out['examined']}, would pass {out['would_pass']}, "
                   f"would fail {out['would_fail']}, errors {out['errors']}")
        for item in report.items:
            if item.outcome == "fail":
                click.echo(f"  FAIL {item.serial} (admitted by v{item.admitted_by})")
                for c in item.failed_checks:
                    click.echo(f"    {c['evidence']}.{c['claim']}: expected {json.dumps(c['expected'])}, "
                               f"actual {json.dumps(c['actual'])}")
            elif item.outcome == "error":
                click.echo(f"  ERROR {item.serial}: {item.error}")
    if report.count("fail") or report.count("error"):
        raise SystemExit(1)
