"""The collateral duty (issue 14, "Who runs it"): refresh due collateral, then re-appraise the certificates
whose evidence needs a resource that changed, and act as each one's policy version says.

One run, under a single-replica lease (``db/lease.py``, the anchor worker's: the row ``collateral-duty``
of ``anchor_worker_leases``, renewed by a heartbeat every third of ``CA_SERVICE_COLLATERAL_LEASE_SECONDS``
and taken over once it expires; PostgreSQL and SQLite alike). Every write of the run is fenced: the state
it records and each revocation or flag check the lease in their own transaction, so a holder that froze
(SIGSTOP, a paused VM) and resumed after another replica took over writes nothing (outcome ``lost``,
``collateral.duty_lease_lost``). The refresh's cache writes are fenced too (``services/collateral.py``
``refresh(fence=...)``): once the lease is lost it caches nothing more. What it cached while it still
held the lease is vendor collateral, verified: the next holder's scan judges it.

1. read where the duty left off (``duty_states``): the highest collateral row id it has judged;
2. when a fetcher is given, refresh every cached resource whose nextUpdate falls within ``within``
   (``services/collateral.py`` ``refresh``);
3. the resources changed by every row added since step 1, whatever brought it (this refresh, a
   ``collateral import``, collateral a request sent, a fetch on a cache miss): ``collateral/changes.py``;
4. re-appraise the valid certificates that need one of them, and :func:`~ca_service.services.reappraisal.apply`
   (revoke | warn | ignore per policy version);
5. record the new high-water mark and the run. A run that fails before that is retried whole.

``serve`` runs it in the background (:func:`start_duty`) every ``CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS``
in whichever process holds the lease (every gunicorn worker and replica tries; the last run's time in the
shared state keeps them from running it again before the interval). ``collateral import`` and
``collateral refresh`` run it after a change, waiting for the lease. The first run of a CA with no
recorded state starts from the collateral held then (``since``): ``ca-service reappraise`` judges
everything on demand, under the same lease (:func:`reappraise_now`). Every write of a run is fenced,
its refresh's cache writes included (a holder that lost the lease caches nothing more either).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ca_service.collateral import changes
from ca_service.collateral.changes import Change
from ca_service.collateral.fetchers import Fetcher
from ca_service.db.lease import Lease
from ca_service.db.models.collateral import DutyState
from ca_service.errors import CollateralDutyBusy, CollateralDutyLeaseLost
from ca_service.services.collateral import RefreshResult, attached_fetcher, refresh
from ca_service.services.container import Services
from ca_service.services.reappraisal import Reappraised, apply, reappraise
from ca_service.services.roots import trust_roots

log = logging.getLogger("ca_service.collateral_duty")

DUTY = "collateral"
LEASE_NAME = "collateral-duty"
MISSING_TTL = timedelta(minutes=10)  # an id not visible this long was rolled back, not in flight
DEFAULT_WITHIN = timedelta(days=30)  # Intel TCB Info and CRLs (30 days); not VCEKs or AMD chains (years)

RUNS = Counter("ca_service_collateral_duty_runs_total", "Runs of the collateral duty, by trigger and outcome",
               ["trigger", "outcome"])
CHANGES = Counter("ca_service_collateral_changes_total",
                  "Collateral resources found changed (a verdict may change), by kind", ["kind"])


@dataclass
class DutyRun:
    trigger: str  # worker | import | refresh
    outcome: str  # done | locked (another holder) | recent (ran less than the interval ago)
    #             | lost (another replica took the lease over during the run: nothing written since)
    refresh: RefreshResult | None = None
    changes: list[Change] = field(default_factory=list)
    reappraised: list[Reappraised] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"revoke": 0, "warn": 0, "ignore": 0}
        for a in self.actions:
            out[a["action"]] = out.get(a["action"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "outcome": self.outcome,
                "refresh": self.refresh.to_json() if self.refresh is not None else None,
                "changed": [c.to_json() for c in self.changes],
                "reappraised": [r.to_json() for r in self.reappraised], "actions": self.actions}


# --- the lease ----------------------------------------------------------------------------------------------


def lease_for(svc: Services) -> Lease:
    """A new holder of the duty's lease (a new token: one per run)."""
    return Lease(svc.db, svc.clock, LEASE_NAME, seconds=svc.settings.collateral_lease_seconds,
                 error=CollateralDutyLeaseLost)


@contextmanager
def exclusive(svc: Services, *, wait_seconds: float = 0.0) -> Iterator[Lease | None]:
    """Hold the duty's lease for the block (the :class:`Lease`, to fence writes with), or do not get it
    within ``wait_seconds`` (None)."""
    lease = lease_for(svc)
    with lease.hold(wait_seconds=wait_seconds) as got:
        yield lease if got else None


# --- state ----------------------------------------------------------------------------------------------


def last_state(svc: Services) -> dict[str, Any] | None:
    """The duty's recorded state (``high_water``, ``missing``, ``last_run``), or None before its first run."""
    with svc.db.read() as s:
        row = s.get(DutyState, DUTY)
        return dict(row.state) if row is not None else None


def _save(svc: Services, state: dict[str, Any], lease: Lease) -> None:
    with svc.db.transaction() as s:
        lease.fence(s)
        row = s.get(DutyState, DUTY)
        if row is None:
            s.add(DutyState(name=DUTY, state=state, updated_at=svc.clock.now()))
        else:
            row.state = state
            row.updated_at = svc.clock.now()


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def start_from(svc: Services, mark: int, *, wait_seconds: float = 0.0) -> bool:
    """Record ``mark`` as where the duty starts if it has never run (a ``--no-reappraise`` import on a
    CA whose duty has not run yet: its changes are then judged by the duty's first run). True if set."""
    with exclusive(svc, wait_seconds=wait_seconds) as lease:
        if lease is None or last_state(svc) is not None:
            return False
        _save(svc, {"high_water": mark, "missing": {}}, lease)
        return True


# --- one run --------------------------------------------------------------------------------------------


def run(svc: Services, *, trigger: str, actor: str, fetcher: Fetcher | None = None,
        within: timedelta = DEFAULT_WITHIN, since: int | None = None, min_interval: timedelta | None = None,
        wait_seconds: float = 0.0) -> DutyRun:
    """One run of the duty (module docstring). ``since``: the high-water mark to start from when the
    duty has no recorded state (default: the collateral held now, before any refresh).
    ``min_interval``: do nothing (outcome ``recent``) if any holder ran it less than this ago."""
    with exclusive(svc, wait_seconds=wait_seconds) as lease:
        if lease is None:
            RUNS.labels(trigger=trigger, outcome="locked").inc()
            return DutyRun(trigger, "locked")
        state = last_state(svc) or {}
        now = svc.clock.now()
        last = state.get("last_run") or {}
        if min_interval is not None and "at" in last and now - _parse(last["at"]) < min_interval:
            return DutyRun(trigger, "recent")
        try:
            out = _run(svc, state, lease, trigger=trigger, actor=actor, fetcher=fetcher, within=within,
                       since=since)
        except CollateralDutyLeaseLost as exc:
            # froze or was cut off, and another replica took over: it runs the duty; this one wrote
            # nothing since, and records nothing (its state would be stale)
            log.warning("collateral duty run stopped (%s): %s", exc.code, exc.detail,
                        extra={"trigger": trigger, "holder": lease.holder})
            RUNS.labels(trigger=trigger, outcome="lost").inc()
            return DutyRun(trigger, "lost")
        except Exception as exc:
            # recorded, so the interval holds for a failing run too (no vendor hammering), but the
            # high-water mark stays: the next run judges the same changes again
            state["last_run"] = {"at": _iso(now), "trigger": trigger, "error": type(exc).__name__}
            try:
                _save(svc, state, lease)
            except Exception:  # recording the failure must not mask it
                log.exception("could not record the failed collateral duty run")
            RUNS.labels(trigger=trigger, outcome="failed").inc()
            raise
        RUNS.labels(trigger=trigger, outcome="done").inc()
        return out


def _run(svc: Services, state: dict[str, Any], lease: Lease, *, trigger: str, actor: str, fetcher: Fetcher | None,
         within: timedelta, since: int | None) -> DutyRun:
    now = svc.clock.now()
    if "high_water" in state:
        mark = int(state["high_water"])
    elif since is not None:
        mark = since
    else:
        with svc.db.read() as s:
            mark = changes.high_water(s)
    pending = {int(k): _parse(v) for k, v in (state.get("missing") or {}).items()}
    refreshed = (refresh(svc, fetcher, within=within, roots=trust_roots(svc), fence=lease.fence)
                 if fetcher is not None else None)
    with svc.db.read() as s:
        scan = changes.scan(s, mark, also=frozenset(pending))
    results: list[Reappraised] = []
    actions: list[dict[str, str]] = []
    if scan.changes:
        for c in scan.changes:
            CHANGES.labels(kind=c.kind).inc()
        # judged by the cache as it now is, without fetching again per certificate (the refresh above
        # just asked the vendors; during a vendor outage a fetch per certificate would hold the lease
        # for timeouts x certificates)
        offline = replace(svc, collateral_fetcher=None)
        results = reappraise(offline, changed={c.resource for c in scan.changes})
        actions = apply(offline, results, actor=actor, fence=lease.fence)
    out = DutyRun(trigger, "done", refreshed, scan.changes, results, actions)
    missing = {i: pending.get(i, now) for i in scan.missing}
    state = {"high_water": scan.high_water,
             "missing": {str(i): _iso(t) for i, t in missing.items() if now - t < MISSING_TTL},
             "last_run": {"at": _iso(now), "trigger": trigger, "changed": len(scan.changes),
                          "reappraised": len(results), **out.counts(),
                          "refused": len(refreshed.refused) if refreshed is not None else 0}}
    _save(svc, state, lease)
    if scan.changes:
        log.info("collateral duty: %d resource(s) changed, %d certificate(s) re-appraised, %s",
                 len(scan.changes), len(results), out.counts(), extra={"trigger": trigger})
    return out


# --- on demand (ca-service reappraise) ---------------------------------------------------------------------


def reappraise_now(svc: Services, *, actor: str, at: datetime | None = None,
                   wait_seconds: float = 0.0) -> tuple[list[Reappraised], list[dict[str, str]]]:
    """``ca-service reappraise`` (not a dry run): re-appraise every valid certificate and act on those
    judged worse, holding the duty's lease, so it never acts at the same time as the duty (or another
    on-demand run) of any process on this database. Each revocation and flag is fenced as the duty's
    are. The duty's state (its high-water mark) is left as it is: what the duty has not judged yet, it
    still judges.

    Raises:
        CollateralDutyBusy (``collateral.duty_busy``): another holder kept the lease for ``wait_seconds``;
        nothing was done. CollateralDutyLeaseLost (``collateral.duty_lease_lost``): this run lost the
        lease while acting (it froze past the lease); what it did before stands, nothing after.
    """
    with exclusive(svc, wait_seconds=wait_seconds) as lease:
        if lease is None:
            raise CollateralDutyBusy(
                f"another process holds the collateral duty's lease (held for more than {wait_seconds:g} s): "
                "it is re-appraising now; try again, or wait longer with --wait")
        results = reappraise(svc, at=at)
        return results, apply(svc, results, actor=actor, fence=lease.fence)


# --- in the background (serve) ------------------------------------------------------------------------------


def run_duty(svc: Services, stop: threading.Event, *, interval: float, within: timedelta = DEFAULT_WITHIN,
             poll: float | None = None, fetcher: Fetcher | None = None,
             report: Callable[[DutyRun], None] | None = None) -> None:
    """Run the duty every ``interval`` seconds (whichever process holds the lease) until ``stop`` is set.
    Refreshes only with a fetcher (``fetcher``, else the services' own: ``CA_SERVICE_COLLATERAL=online``);
    re-appraises in any case. ``report`` sees each run. Errors are logged and retried; a database outage
    backs off."""
    poll = poll if poll is not None else min(interval, 60.0)
    delay = 0.0
    while not stop.wait(delay):
        try:
            out = run(svc, trigger="worker", actor="collateral-duty", fetcher=fetcher or attached_fetcher(svc),
                      within=within, min_interval=timedelta(seconds=interval) * 0.9)
            if report is not None:
                report(out)
            delay = poll
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            delay = min(300.0, max(poll, delay * 2))
            log.warning("collateral duty: database unavailable (%s); retrying in %.0f s",
                        type(getattr(exc, "orig", None) or exc).__name__, delay)
        except Exception:  # the background thread must survive anything
            log.exception("collateral duty run failed; retrying")
            delay = poll


def start_duty(svc: Services, *, interval: float, within: timedelta = DEFAULT_WITHIN,
               poll: float | None = None) -> tuple[threading.Thread, threading.Event]:
    """:func:`run_duty` in a daemon thread (for ``serve``); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_duty, args=(svc, stop), kwargs={"interval": interval, "within": within,
                                                                          "poll": poll},
                              name="collateral-duty", daemon=True)
    thread.start()
    return thread, stop
