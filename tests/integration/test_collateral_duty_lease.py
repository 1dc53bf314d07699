# ruff: noqa: F811  (the `ca` fixture imported from test_collateral_trigger)
"""A frozen collateral duty holder is cut off within seconds (db/lease.py, as the anchor worker's): a real
``ca-service collateral refresh --loop`` takes the duty's lease and is held mid-refresh by the loopback
vendor replay, which brings the August 2026 TCB recovery; it is frozen (SIGSTOP). Another holder takes the
lease over within about its length (2 s) and runs. After SIGCONT the old holder gets the vendor's answer,
but its cache write is fenced like every other write of the duty: it caches, revokes, flags and records
nothing. The next run of the new holder then refreshes and acts on that recovery. The session's
database: PostgreSQL with CA_SERVICE_TEST_DATABASE=postgres, else SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from ca_service.collateral import changes
from ca_service.collateral.fetchers import RequestsFetcher, load_bundle
from ca_service.db.models.anchor import AnchorWorkerLease
from ca_service.services import collateral_duty as duty
from tests.collateral import replay
from tests.collateral.make_bundle import intel_entries
from tests.collateral.recorded import vector

from .test_collateral_trigger import (  # noqa: F401
    BYSTANDER,
    NEW,
    RECOVERED,
    _entries,
    _leaves,
    _status,
    _tcb_only,
    ca,
)

LEASE = 2.0


class Gate:
    """WSGI middleware: every request waits until ``open`` (``waiting`` says one arrived)."""

    def __init__(self, app: Any) -> None:
        self.app, self.waiting, self.opened = app, threading.Event(), threading.Event()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.waiting.set()
        self.opened.wait(120)
        return self.app(environ, start_response)


def _lease_holder(svc) -> str | None:
    with svc.db.read() as s:
        row = s.scalars(select(AnchorWorkerLease).where(AnchorWorkerLease.name == duty.LEASE_NAME)).first()
        return row.holder if row is not None else None


def test_a_frozen_duty_holder_is_taken_over_and_writes_nothing_after_it_resumes(ca):
    svc, serials = ca
    with svc.db.read() as s:
        mark = changes.high_water(s)
    assert duty.start_from(svc, mark)  # the duty's state, with no last run (so --loop runs at once)
    served = _entries(vector(RECOVERED)) + _entries(vector(BYSTANDER, "collateral-2025-06"))
    served = [e for e in served if "fmspc=B0C06F000000" not in e["url"]] + _tcb_only(intel_entries(NEW))
    lines: list[str] = []
    # a replay behind the gate
    gate = Gate(replay.VendorReplay(served))
    server = make_server("127.0.0.1", 0, gate, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    env = {**os.environ, "CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": svc.settings.database_url, "CA_SERVICE_COLLATERAL_LEASE_SECONDS": str(LEASE)}
    err = open(svc.settings.home / "loop.stderr", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "collateral", "refresh", "--loop",
                             "--interval", "60", "--within", "3650d", *replay.mirror_args(base)], env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        assert gate.waiting.wait(60), "the --loop holder never asked the replay"
        holder = _lease_holder(svc)
        assert holder is not None and f":{proc.pid}:" in holder
        # held by its heartbeat while it waits on the vendor, longer than the lease: nobody else runs
        time.sleep(LEASE * 1.5)
        assert duty.run(svc, trigger="worker", actor="replica-b").outcome == "locked"
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        took_over = duty.run(svc, trigger="worker", actor="replica-b", wait_seconds=30)
        waited = time.monotonic() - frozen
        assert took_over.outcome == "done" and took_over.changes == []
        assert waited < LEASE + 8, f"took {waited:.1f} s to take over a {LEASE} s lease"
        print(f"took the duty's {LEASE} s lease over {waited:.2f} s after the SIGSTOP")
        state = duty.last_state(svc)
        assert state is not None and state["high_water"] == mark and "error" not in state["last_run"]
        assert _lease_holder(svc) != holder
        # the old holder resumes: its refresh brings the recovery into the cache, and it judges it
        gate.opened.set()
        os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("duty_lease_lost" in ln for ln in lines):
            time.sleep(0.2)
        assert any("lease lost to another replica (collateral.duty_lease_lost)" in ln for ln in lines), (
            lines, (svc.settings.home / "loop.stderr").read_text()[-3000:])
        with svc.db.read() as s:
            assert changes.high_water(s) == mark  # the vendor answered, but the stale holder cached nothing
        # ... and revoked, flagged and recorded nothing
        for serial in serials.values():
            got = _status(svc, serial)
            assert got["status"] == "valid" and "reappraisal" not in got["appraisal"], (serial, got)
        assert _leaves(svc, serials.values()) == []
        assert duty.last_state(svc)["high_water"] == mark
        assert not any(ln.startswith("re-appraised") for ln in lines), lines
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        gate.opened.set()
        err.close()
    # the holder's next run (refreshing from the same vendor) brings the recovery in and acts on it
    try:
        after = duty.run(svc, trigger="worker", actor="replica-b", wait_seconds=30, within=timedelta(days=3650),
                         fetcher=RequestsFetcher(clock=svc.clock, mirrors=replay.mirrors(base)))
    finally:
        server.shutdown()
    assert after.outcome == "done" and after.refresh is not None and len(after.refresh.refreshed) == 1
    assert [c.key for c in after.changes] == ["b0c06f000000"]
    assert sorted(a["serial"] for a in after.actions) == sorted([serials["revoked"], serials["flagged"]])
    assert _status(svc, serials["revoked"])["status"] == "revoked"
    assert _status(svc, serials["flagged"])["appraisal"]["reappraisal"]["after"] == "refused"
    assert _status(svc, serials["bystander"])["status"] == "valid"


def test_a_holder_frozen_inside_a_fenced_transaction_is_cut_off_by_the_server(tmp_path_factory, db_url_factory):
    """PostgreSQL: a holder that freezes with the lease row locked (inside one of its fenced transactions)
    would block every claimant; the transaction's idle_in_transaction_session_timeout (the lease's length)
    makes the server end its session, the row is free, another holder takes the lease over, and the frozen
    one's transaction is gone (its commit fails) and its next fence finds the lease lost."""
    from sqlalchemy.exc import DBAPIError

    from ca_service.db.lease import Lease
    from ca_service.errors import CollateralDutyLeaseLost
    from tests.collateral.fixtures import fresh_services

    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        if not svc.db.is_postgres:
            pytest.skip("PostgreSQL only: on SQLite a write transaction is the whole database's (BEGIN IMMEDIATE)")
        frozen = Lease(svc.db, svc.clock, "test-lease", seconds=LEASE, error=CollateralDutyLeaseLost)
        assert frozen.claim()  # no heartbeat: it is frozen from here on
        session = svc.db.sessions()
        session.begin()
        frozen.fence(session)  # the row locked, then idle in transaction
        other = Lease(svc.db, svc.clock, "test-lease", seconds=LEASE, error=CollateralDutyLeaseLost)
        t0 = time.monotonic()
        with other.hold(wait_seconds=30) as got:
            waited = time.monotonic() - t0
            assert got, "the row stayed locked by the frozen holder"
            assert waited < LEASE + 8, waited
            print(f"took the {LEASE} s lease over {waited:.2f} s after its holder froze with the row locked")
            with pytest.raises(DBAPIError):  # its session was terminated: nothing it wrote commits
                session.commit()
            session.close()
            with pytest.raises(CollateralDutyLeaseLost):
                frozen.ensure()
            assert _lease_holder_named(svc, "test-lease") == other.holder
    finally:
        svc.close()


def _lease_holder_named(svc, name: str) -> str | None:
    with svc.db.read() as s:
        row = s.get(AnchorWorkerLease, name)
        return row.holder if row is not None else None


def test_a_stale_holder_caches_nothing(ca):
    """The duty's refresh writes the cache under its lease's fence (services/collateral.py
    ``refresh(fence=...)``): a holder whose lease expired (it froze) and was claimed by another gets the
    vendor's answer, but its write is refused (collateral.duty_lease_lost) and the cache is as it was;
    the new holder's write of the same answer goes in."""
    import json

    from ca_service.collateral.fetchers import ReplayFetcher
    from ca_service.collateral.store import newest_per_key
    from ca_service.db.lease import Lease
    from ca_service.db.models.collateral import CollateralItem
    from ca_service.errors import CollateralDutyLeaseLost
    from ca_service.services import collateral as cs
    from ca_service.services.roots import trust_roots

    svc, _ = ca
    served = _tcb_only(intel_entries(NEW))  # the August 2026 TCB recovery of FMSPC B0C06F000000
    fetcher = ReplayFetcher.from_bundle(load_bundle(json.dumps(served).encode()))
    # the duty's lease, claimed without a heartbeat: it lapses after a second, as a frozen holder's does
    stale = Lease(svc.db, svc.clock, duty.LEASE_NAME, seconds=1.0, error=CollateralDutyLeaseLost)
    assert stale.claim()
    time.sleep(stale.seconds + 0.3)
    taker = duty.lease_for(svc)
    assert taker.claim()  # taken over: the stale one's lease had expired
    with svc.db.read() as s:
        mark, rows = changes.high_water(s), len(s.scalars(select(CollateralItem)).all())
        due = len(newest_per_key(s))
    with pytest.raises(CollateralDutyLeaseLost):
        cs.refresh(svc, fetcher, within=timedelta(days=3650), roots=trust_roots(svc), fence=stale.fence)
    assert len(fetcher.calls) == 1  # it asked the vendor (the first resource due), and stopped at the write
    with svc.db.read() as s:
        assert changes.high_water(s) == mark and len(s.scalars(select(CollateralItem)).all()) == rows
    # the holder's refresh of the same answers goes in
    out = cs.refresh(svc, fetcher, within=timedelta(days=3650), roots=trust_roots(svc), fence=taker.fence)
    assert len(fetcher.calls) == 1 + due
    assert [c.key for c in out.changed] == ["b0c06f000000"] and len(out.refreshed) == 1
