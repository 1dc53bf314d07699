# ruff: noqa: F811  (the `ca` fixture imported from test_collateral_trigger)
"""``ca-service reappraise`` (not a dry run) holds the collateral duty's lease (services/collateral_duty.py
``reappraise_now``), so it and the duty never re-appraise and act at the same time on one database.

Two actors on the session's database (PostgreSQL with CA_SERVICE_TEST_DATABASE=postgres, else SQLite):
this process holding the duty's lease, as serve's duty does during a run, and the real CLI in a
subprocess; then the other way round, the on-demand run holding it while a duty run is refused, and an
on-demand run that loses the lease while it works acting on nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import update

from ca_service.db.models.anchor import AnchorWorkerLease
from ca_service.errors import CollateralDutyBusy, CollateralDutyLeaseLost
from ca_service.services import collateral_duty as duty
from ca_service.services.container import Services

from .test_collateral_trigger import _leaves, _status, ca  # noqa: F401


def _cli(svc, *args: str) -> list[str]:
    return [sys.executable, "-m", "ca_service.cli", "reappraise", *args]


def _env(svc) -> dict[str, str]:
    return {**os.environ, "CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
            "CA_SERVICE_DATABASE_URL": svc.settings.database_url}


def _untouched(svc, serials) -> None:
    for name, serial in serials.items():
        got = _status(svc, serial)
        assert got["status"] == "valid" and "reappraisal" not in got["appraisal"], (name, got)
    assert _leaves(svc, serials.values()) == []


def _acted(svc, serials) -> None:
    """What a re-appraisal now does to the fixture's certificates: the June 2025 collateral is past its
    window, so every one is judged refused; the revoke policy's are revoked, the warn policy's flagged."""
    assert _status(svc, serials["revoked"])["status"] == "revoked"
    assert _status(svc, serials["bystander"])["status"] == "revoked"
    flagged = _status(svc, serials["flagged"])
    assert flagged["status"] == "valid" and flagged["appraisal"]["reappraisal"]["after"] == "refused"
    assert sorted(_leaves(svc, serials.values())) == sorted([("revocation", serials["revoked"]),
                                                             ("revocation", serials["bystander"]),
                                                             ("reappraisal", serials["flagged"])])


def test_the_cli_refuses_or_waits_while_the_duty_holds_the_lease(ca):
    svc, serials = ca
    with duty.exclusive(svc) as lease:  # this process is the duty's holder, renewing by its heartbeat
        assert lease is not None
        busy = subprocess.run(_cli(svc, "--wait", "1"), env=_env(svc), capture_output=True, text=True, timeout=120)
        assert busy.returncode == 75, (busy.stdout, busy.stderr)
        assert busy.stderr.count("\n") == 1 and busy.stderr.startswith("error [collateral.duty_busy]: "), busy.stderr
        assert busy.stdout == ""
        _untouched(svc, serials)
        # a dry run takes no lease: it reports while the duty runs, and changes nothing
        dry = subprocess.run(_cli(svc, "--dry-run"), env=_env(svc), capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0 and "3 certificate(s) re-appraised, 3 would change" in dry.stdout, dry
        # one that waits long enough: it does nothing while the lease is held ...
        waiting = subprocess.Popen(_cli(svc, "--wait", "120"), env=_env(svc), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(5)
            assert waiting.poll() is None, waiting.communicate()
            _untouched(svc, serials)
        except BaseException:
            waiting.kill()
            raise
    # ... and acts once it is released
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, (out, err)
    assert "3 certificate(s) re-appraised, 3 changed" in out, out
    _acted(svc, serials)


class Pause:
    """Wraps the duty module's ``reappraise``: the on-demand run stops after judging, before acting,
    until ``go`` (``judged`` says it got there): a holder caught mid-run, its lease real."""

    def __init__(self, real) -> None:
        self.real, self.judged, self.go = real, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.judged.set()
        assert self.go.wait(120)
        return out


def _on_demand_in_thread(svc, monkeypatch) -> tuple[Pause, threading.Thread, dict]:
    pause = Pause(duty.reappraise)
    monkeypatch.setattr(duty, "reappraise", pause)
    other = Services.create(svc.settings)  # a second actor: its own engine and connections
    got: dict = {}

    def target() -> None:
        try:
            got["result"] = duty.reappraise_now(other, actor="cli:test", wait_seconds=0)
        except Exception as exc:
            got["error"] = exc
        finally:
            other.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert pause.judged.wait(120), got
    return pause, thread, got


def test_the_duty_does_not_run_while_an_on_demand_reappraisal_holds_the_lease(ca, monkeypatch):
    svc, serials = ca
    pause, thread, got = _on_demand_in_thread(svc, monkeypatch)
    try:
        assert duty.run(svc, trigger="worker", actor="collateral-duty").outcome == "locked"
        with pytest.raises(CollateralDutyBusy):
            duty.reappraise_now(svc, actor="cli:second", wait_seconds=0.5)
        _untouched(svc, serials)
    finally:
        pause.go.set()
        thread.join(120)
    results, actions = got["result"]
    assert len(results) == 3 and sorted(a["action"] for a in actions) == ["revoke", "revoke", "warn"]
    _acted(svc, serials)
    assert duty.last_state(svc) is None  # the duty's own high-water mark is the duty's: not moved


def test_an_on_demand_reappraisal_that_lost_the_lease_acts_on_nothing(ca, monkeypatch):
    """The on-demand holder froze past its lease after judging and another holder took the lease over
    (here the takeover is written as the row a claim leaves: another holder's token): on resuming, its
    first revocation's fence finds the lease lost, and nothing is revoked, flagged or logged."""
    svc, serials = ca
    pause, thread, got = _on_demand_in_thread(svc, monkeypatch)
    taker = duty.lease_for(svc)
    try:
        with svc.db.transaction() as s:
            s.execute(update(AnchorWorkerLease).where(AnchorWorkerLease.name == duty.LEASE_NAME)
                      .values(holder=taker.holder))
    finally:
        pause.go.set()
        thread.join(120)
    assert isinstance(got.get("error"), CollateralDutyLeaseLost), got
    _untouched(svc, serials)
    with svc.db.transaction() as s:  # the taker holds it: its own fence passes
        taker.fence(s)
