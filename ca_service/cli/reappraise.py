"""``ca-service reappraise [--dry-run] [--at RFC3339] [--wait SECONDS] [--json]``: which valid certificates
the CA's current collateral judges differently, before and after, and why; without ``--dry-run`` each one
judged worse is revoked, flagged or left as its policy's ``on_collateral_update`` says
(services/reappraisal.py).

Without ``--dry-run`` it holds the collateral duty's lease (services/collateral_duty.py ``reappraise_now``),
so it never acts while serve's duty, a ``collateral refresh`` or another ``reappraise`` does. It waits up
to ``--wait`` seconds (default 60) for the lease, then refuses: ``error [collateral.duty_busy]: ...``, exit
75 (EX_TEMPFAIL: nothing was done, try again). A run that loses the lease while acting (it froze past the
lease) stops with ``error [collateral.duty_lease_lost]``, exit 1. ``--dry-run`` writes nothing and takes
no lease."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from ca_service.cli.common import actor, open_services
from ca_service.errors import CollateralDutyBusy, CollateralDutyLeaseLost

WAIT = 60.0  # seconds for the duty's lease: a run of serve's duty takes seconds to minutes
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, the invocation may be retried


@click.command("reappraise")
@click.option("--dry-run", is_flag=True, help="list each certificate's status before and after; change nothing")
@click.option("--at", "at_text", help="judge as of this RFC 3339 instant (default now)")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=WAIT, show_default=True,
              help="without --dry-run: seconds to wait for the collateral duty's lease if another process "
                   "holds it, then refuse (collateral.duty_busy, exit 75)")
@click.option("--json", "as_json", is_flag=True)
def reappraise(dry_run: bool, at_text: str | None, wait_seconds: float, as_json: bool) -> None:
    """Re-appraise valid certificates from their stored evidence with the CA's current collateral.
    Without --dry-run, act on those judged worse as each policy's on_collateral_update says, holding
    the collateral duty's lease (waiting up to --wait seconds for it)."""
    try:
        at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else None
    except ValueError:
        raise click.BadParameter(f"{at_text!r} is not an RFC 3339 time (for example 2026-03-01T12:00:00Z)",
                                 param_hint="--at") from None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # imported here, not at module level: the reappraisal metric must not load prometheus_client before
    # `serve` has set up its multiprocess directory (cli/main.py imports every command module)
    from ca_service.services.collateral_duty import reappraise_now
    from ca_service.services.reappraisal import reappraise as run

    svc = open_services()
    actions: list[dict[str, str]] = []
    try:
        if dry_run:
            results = run(svc, at=at)
        else:
            results, actions = reappraise_now(svc, actor=actor(), at=at, wait_seconds=wait_seconds)
    except CollateralDutyBusy as exc:
        click.echo(f"error [{exc.code}]: {exc.detail}", err=True)
        sys.exit(EX_TEMPFAIL)
    except CollateralDutyLeaseLost as exc:
        click.echo(f"error [{exc.code}]: {exc.detail} (actions before the loss stand; the new holder's "
                   "duty goes on)", err=True)
        sys.exit(1)
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
