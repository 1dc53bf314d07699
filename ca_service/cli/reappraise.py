"""``ca-service reappraise [--dry-run] [--at RFC3339] [--json]``: which valid certificates the CA's current
collateral judges differently, before and after, and why; without ``--dry-run`` each one judged worse is
revoked, flagged or left as its policy's ``on_collateral_update`` says (services/reappraisal.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from ca_service.cli.common import actor, open_services


@click.command("reappraise")
@click.option("--dry-run", is_flag=True, help="list each certificate's status before and after; change nothing")
@click.option("--at", "at_text", help="judge as of this RFC 3339 instant (default now)")
@click.option("--json", "as_json", is_flag=True)
def reappraise(dry_run: bool, at_text: str | None, as_json: bool) -> None:
    """Re-appraise valid certificates from their stored evidence with the CA's current collateral.
    Without --dry-run, act on those judged worse as each policy's on_collateral_update says."""
    try:
        at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else None
    except ValueError:
        raise click.BadParameter(f"{at_text!r} is not an RFC 3339 time (for example 2026-03-01T12:00:00Z)",
                                 param_hint="--at") from None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # imported here, not at module level: the reappraisal metric must not load prometheus_client before
    # `serve` has set up its multiprocess directory (cli/main.py imports every command module)
    from ca_service.services.reappraisal import apply
    from ca_service.services.reappraisal import reappraise as run

    svc = open_services()
    try:
        results = run(svc, at=at)
        actions = [] if dry_run else apply(svc, results, actor=actor())
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps({"results": [r.to_json() for r in results], "actions": actions}
                              if not dry_run else [r.to_json() for r in results], indent=2))
        return
    for r in results:
        mark = "CHANGED" if r.changed else "same"
        click.echo(f"{r.serial}\t{r.policy}\t{r.before} -> {r.after}\t{mark}"
                   + ("".join(f"\n\t{reason}" for reason in r.reasons)))
    click.echo(f"{len(results)} certificate(s) re-appraised, {sum(r.changed for r in results)} "
               + ("would change" if dry_run else "changed"))
    for a in actions:
        click.echo(f"{a['action']}\t{a['serial']}\t{a['before']} -> {a['after']}")
