"""``ca-service collateral import BUNDLE | export BUNDLE | fetch --for EVIDENCE... BUNDLE | refresh | list``:
the vendor collateral cache.

``fetch`` runs on a connected machine (no CA needed): it fetches exactly what the given evidence needs
from Intel PCS / AMD KDS, verifies each response, and writes a bundle that ``import`` reads on the
air-gapped CA; ``export`` writes what a CA has cached in the same format.

``import`` is the air-gapped path: a JSON list of recorded Intel PCS v4 / AMD KDS responses
(``[{url, status, headers, body_b64, fetched_at}]``), every item verified, all or nothing. ``refresh``
is the online path (run it on a timer): every cached resource whose nextUpdate falls within
``--within`` is fetched again from the allowlisted vendor hosts, verified, and kept only if it does
not roll the TCB evaluation data number back.

Both then run the collateral duty (services/collateral_duty.py): the valid certificates whose evidence
needs a resource that changed are re-appraised and revoked, flagged or left per policy
(``--no-reappraise``: only cache). ``refresh --loop`` runs the duty until interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ca_service.cli.common import actor, open_services
from ca_service.cli.progress import progress_bar
from ca_service.collateral.fetchers import RequestsFetcher, dump_bundle, load_bundle
from ca_service.collateral.store import newest_per_key
from ca_service.errors import CAServiceError, CollateralDutyLeaseLost
from ca_service.evidence.trust import DEFAULT_ROOTS
from ca_service.policy.model import parse_duration
from ca_service.services import collateral as service
from ca_service.services import collateral_bundles as bundles
from ca_service.services.roots import trust_roots, with_test_roots


def _fail(exc: CAServiceError) -> None:
    url = exc.fields.get("url")
    click.echo(f"error [{exc.code}]: {exc.detail}" + (f" ({url})" if url else ""), err=True)
    sys.exit(1)


@click.group("collateral")
def collateral() -> None:
    """Vendor collateral cache (Intel PCS, AMD KDS): offline import, online refresh."""


@collateral.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-reappraise", is_flag=True,
              help="only cache: do not re-appraise the certificates a changed resource concerns")
@click.option("--json", "as_json", is_flag=True)
def import_(bundle: Path, no_reappraise: bool, as_json: bool) -> None:
    """Verify every item of an offline BUNDLE and cache it (nothing is cached if one is refused); then
    re-appraise the valid certificates whose evidence needs a resource that changed, and revoke, flag
    or leave each as its policy version's collateral.on_collateral_update says."""
    from ca_service.collateral.changes import high_water

    svc = open_services()
    try:
        with svc.db.read() as session:
            mark = high_water(session)
        data = bundle.read_bytes()
        # the bar's total: the bundle read as import reads it (its nesting bound, its refusals)
        with progress_bar("import", len(load_bundle(data))) as step:
            result = service.import_bundle(svc, data, roots=trust_roots(svc), progress=step)
        duty = None
        if result.changed:
            from ca_service.services import collateral_duty

            if no_reappraise:  # left to the duty's next run (serve's, or refresh --loop)
                collateral_duty.start_from(svc, mark, wait_seconds=DUTY_WAIT)
            else:
                duty = collateral_duty.run(svc, trigger="import", actor=actor(), since=mark,
                                           wait_seconds=DUTY_WAIT)
    except CAServiceError as exc:
        _fail(exc)
        return
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(result.to_json() | {"reappraisal": duty.to_json() if duty else None}, indent=2))
        return
    click.echo(f"imported {len(result.added)} item(s); {len(result.already_cached)} already cached")
    _echo_changes(result.changed, duty, no_reappraise)


# a CLI run waits this long for the duty's lease (serve's duty may hold it during its own run)
DUTY_WAIT = 300.0


def _echo_changes(changed: list[Any], duty: Any, skipped: bool) -> None:
    for c in changed:
        click.echo(f"changed\t{c.kind}\t{c.key}\t{c.reason}")
    if not changed:
        click.echo("no resource changed in a way that can change a verdict")
        return
    if skipped:
        click.echo("not re-appraised (--no-reappraise): the collateral duty's next run judges these changes, "
                   "or run `ca-service reappraise`")
        return
    if duty.outcome in ("locked", "lost"):
        held = "holds" if duty.outcome == "locked" else "took over"
        click.echo(f"not re-appraised: another process {held} the collateral duty's lease; its duty judges "
                   "these changes on its next run, or run `ca-service reappraise`", err=True)
        return
    counts = duty.counts()
    click.echo(f"re-appraised {len(duty.reappraised)} certificate(s): revoked {counts['revoke']}, "
               f"flagged {counts['warn']}, ignored {counts['ignore']}")
    for a in duty.actions:
        click.echo(f"{a['action']}\t{a['serial']}\t{a['before']} -> {a['after']}")


def _mirrors(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        host, sep, url = v.partition("=")
        if not sep or not url:
            raise click.BadParameter(f"{v!r} is not HOST=URL", param_hint="--mirror")
        out[host] = url
    return out


@collateral.command("refresh")
@click.option("--within", default="7d", show_default=True,
              help="refresh what expires within this window (e.g. 24h, 7d)")
@click.option("--mirror", "mirrors", multiple=True, metavar="HOST=URL",
              help="fetch an allowlisted vendor host's resources from URL (a PCCS-like mirror) "
                   "[default: CA_SERVICE_COLLATERAL_MIRRORS]")
@click.option("--no-reappraise", is_flag=True,
              help="only refresh: do not re-appraise the certificates a changed resource concerns")
@click.option("--loop", is_flag=True,
              help="run as the collateral duty until interrupted (for a CA whose serve runs without it)")
@click.option("--interval", type=float, default=None,
              help="with --loop: seconds between runs [default: CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS]")
@click.option("--json", "as_json", is_flag=True)
def refresh(within: str, mirrors: tuple[str, ...], no_reappraise: bool, loop: bool, interval: float | None,
            as_json: bool) -> None:
    """Fetch again, verify and cache every resource that is about to expire; then re-appraise what a
    changed resource concerns (as `import`). Exit 1 if any was refused."""
    if loop:
        if no_reappraise:
            raise click.UsageError("--loop is the collateral duty: it re-appraises (drop --no-reappraise)")
        _loop(within, mirrors, interval)
        return
    if interval is not None:
        raise click.UsageError("--interval goes with --loop")
    from ca_service.collateral.changes import high_water

    svc = open_services()
    duty = None
    try:
        fetcher = RequestsFetcher(clock=svc.clock,
                                  mirrors=_mirrors(mirrors) if mirrors else dict(svc.settings.collateral_mirrors))
        from ca_service.services import collateral_duty

        if no_reappraise:
            with svc.db.read() as session:
                mark = high_water(session)
            result = service.refresh(svc, fetcher, within=parse_duration(within), roots=trust_roots(svc))
            if result.changed:  # left to the duty's next run
                collateral_duty.start_from(svc, mark, wait_seconds=DUTY_WAIT)
        else:
            duty = collateral_duty.run(svc, trigger="refresh", actor=actor(), fetcher=fetcher,
                                       within=parse_duration(within), wait_seconds=DUTY_WAIT)
            if duty.outcome == "lost":  # froze past the lease: the new holder refreshes; not this one
                raise CollateralDutyLeaseLost(
                    "another process took the collateral duty's lease over during this refresh; it wrote "
                    "nothing more (the new holder's duty refreshes and judges)")
            if duty.refresh is None:  # the lease stayed taken: refresh without judging
                result = service.refresh(svc, fetcher, within=parse_duration(within), roots=trust_roots(svc))
            else:
                result = duty.refresh
    except CAServiceError as exc:
        _fail(exc)
        return
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(result.to_json() | {"reappraisal": duty.to_json() if duty else None}, indent=2))
    else:
        click.echo(f"refreshed {len(result.refreshed)}, unchanged {len(result.unchanged)}, "
                   f"refused {len(result.refused)}")
        for r in result.refused:
            click.echo(f"refused [{r['code']}] {r['url']}: {r['detail']}", err=True)
        _echo_changes(result.changed if duty is None or duty.refresh is None else duty.changes, duty, no_reappraise)
    if not result.ok:
        sys.exit(1)


def _loop(within: str, mirrors: tuple[str, ...], interval: float | None) -> None:
    """``refresh --loop``: the duty ``serve`` runs, in the foreground, one line per run that did work."""
    import threading

    from ca_service.services import collateral_duty

    svc = open_services()
    stop = threading.Event()
    try:
        fetcher = RequestsFetcher(clock=svc.clock,
                                  mirrors=_mirrors(mirrors) if mirrors else dict(svc.settings.collateral_mirrors))
        every = interval if interval is not None else svc.settings.collateral_refresh_interval_seconds
        if every <= 0:
            raise click.BadParameter("must be positive", param_hint="--interval")

        def report(run: Any) -> None:
            if run.outcome == "lost":
                click.echo(f"{svc.clock.now().isoformat()} lease lost to another replica "
                           "(collateral.duty_lease_lost): this run wrote nothing")
            if run.outcome != "done":
                return
            r = run.refresh
            click.echo(f"{svc.clock.now().isoformat()} refreshed {len(r.refreshed)}, unchanged {len(r.unchanged)}, "
                       f"refused {len(r.refused)}")
            _echo_changes(run.changes, run, False)

        collateral_duty.run_duty(svc, stop, interval=every, within=parse_duration(within), fetcher=fetcher,
                                 poll=min(every, 60.0), report=report)
    except KeyboardInterrupt:
        stop.set()
    except CAServiceError as exc:
        _fail(exc)
    finally:
        svc.close()


@collateral.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The newest cached item of each resource: kind, key, window, TCB evaluation data number."""
    svc = open_services()
    try:
        with svc.db.read() as session:
            rows = [{"kind": r.kind, "key": r.key, "url": r.url, "issue_date": r.issue_date.isoformat(),
                     "next_update": r.next_update.isoformat(),
                     "tcb_evaluation_data_number": r.tcb_evaluation_data_number, "sha256": r.sha256}
                    for r in newest_per_key(session)]
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        tcb = "" if r["tcb_evaluation_data_number"] is None else f" tcbEval {r['tcb_evaluation_data_number']}"
        click.echo(f"{r['kind']}\t{r['key']}\tnext update {r['next_update']}{tcb}")


@collateral.command("export")
@click.argument("bundle", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def export(bundle: Path, as_json: bool) -> None:
    """Write every cached item to BUNDLE, in the format `collateral import` reads."""
    svc = open_services()
    try:
        responses = bundles.cached_responses(svc)
    finally:
        svc.close()
    with progress_bar("export", len(responses)) as step:
        for r in responses:
            step(r.url)
    bundle.write_bytes(dump_bundle(responses))
    if as_json:
        click.echo(json.dumps({"exported": [r.url for r in responses]}, indent=2))
    else:
        click.echo(f"exported {len(responses)} item(s) to {bundle}")


@collateral.command("fetch")
@click.option("--for", "evidence", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an evidence file (TDX/SGX quote, SEV-SNP or Azure HCL report, NVIDIA GPU report with "
                   "--device-chain); repeat, or list several")
@click.argument("more", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mirror", "mirrors", multiple=True, metavar="HOST=URL",
              help="fetch an allowlisted vendor host's resources from URL (a PCCS-like mirror)")
@click.option("--update", type=click.Choice(["standard", "early"]), default=None,
              help="Intel PCS update= for TCB Info and QE Identity (default: CA_SERVICE_COLLATERAL_UPDATE)")
@click.option("--device-chain", "device_chains", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an NVIDIA GPU report's device chain (PEM, nvtrust gpuAkCertChain), one per GPU report, in order")
@click.option("--json", "as_json", is_flag=True)
def fetch(evidence: tuple[Path, ...], more: tuple[Path, ...], mirrors: tuple[str, ...], update: str | None,
          device_chains: tuple[Path, ...], as_json: bool) -> None:
    """Fetch what the --for EVIDENCE needs from the vendors and write BUNDLE (the last argument).
    Exit 1 if anything was refused (the bundle then holds what was fetched)."""
    from ca_service.config import Settings

    if not more:
        raise click.UsageError("BUNDLE (the output file) is missing")
    files, out = [*evidence, *more[:-1]], more[-1]
    for f in files:
        if not f.is_file():
            raise click.BadParameter(f"{f} is not a file", param_hint="--for")
    try:
        settings = Settings.from_env()
        update = update or settings.collateral_update
        roots = with_test_roots(DEFAULT_ROOTS, settings)
        fetcher = RequestsFetcher(mirrors=_mirrors(mirrors))
    except CAServiceError as exc:
        _fail(exc)
        return
    # about four resources per evidence file (Intel: TCB Info, QE Identity, two CRLs; AMD: three)
    with progress_bar("fetch", 4 * len(files)) as step:
        result = bundles.fetch_for([(str(f), f.read_bytes()) for f in files], fetcher, update=update,
                                   roots=roots, progress=step,
                                   device_chains=[c.read_bytes() for c in device_chains])
    out.write_bytes(dump_bundle(result.responses))
    if as_json:
        click.echo(json.dumps(result.to_json() | {"bundle": str(out)}, indent=2))
    else:
        click.echo(f"fetched {len(result.fetched)} item(s) for {len(files)} evidence file(s) into {out}; "
                   f"{len(result.shared)} shared, refused {len(result.refused)}"
                   + (f"; waited {result.waited_seconds:.0f}s for vendor throttling" if result.waited_seconds else ""))
        for r in result.refused:
            click.echo(f"refused [{r['code']}] {r['evidence']} {r['url']}: {r['detail']}", err=True)
    if not result.ok:
        sys.exit(1)
