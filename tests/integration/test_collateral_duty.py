"""The collateral duty's own guarantees (services/collateral_duty.py), on the session's database (SQLite,
or PostgreSQL with CA_SERVICE_TEST_DATABASE=postgres): one holder at a time, not again within the interval,
rows that become visible late are still judged, a failed run is recorded and retried, /readyz says so."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ca_service.collateral import changes
from ca_service.db.models.collateral import CollateralItem
from ca_service.services import collateral as cs
from ca_service.services import collateral_duty as duty
from ca_service.services.opstate import OpsState, operational_state
from tests.collateral.fixtures import fresh_services
from tests.collateral.make_bundle import intel_entries
from tests.collateral.recorded import vector

GCP = "tdx/gcp-c3-v4-uptodate"


@pytest.fixture
def svc(tmp_path_factory, db_url_factory):
    s = fresh_services(tmp_path_factory, db_url_factory)
    yield s
    s.close()


def _june(svc) -> None:
    v = vector(GCP, "collateral-2025-06")
    cs.import_bundle(svc, json.dumps(intel_entries(v.dir / "collateral-2025-06")).encode())


def test_one_holder_at_a_time_and_not_again_within_the_interval(svc):
    first = duty.run(svc, trigger="worker", actor="test", min_interval=timedelta(hours=1))
    assert first.outcome == "done" and first.changes == []  # the first run starts from what is held
    state = duty.last_state(svc)
    assert state is not None and state["last_run"]["trigger"] == "worker"
    assert duty.run(svc, trigger="worker", actor="test", min_interval=timedelta(hours=1)).outcome == "recent"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with duty.exclusive(svc) as got:
            assert got
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(30)
        assert duty.run(svc, trigger="import", actor="test").outcome == "locked"
    finally:
        release.set()
        t.join(30)
    # freed: a CLI run waits for the lock and then judges what changed since the mark
    _june(svc)
    out = duty.run(svc, trigger="import", actor="test", wait_seconds=5)
    assert out.outcome == "done"
    assert {c.reason for c in out.changes} == {"first intel.tcb_info.tdx held", "first intel.qe_identity.tdx held",
                                               "first intel.pck_crl held", "first intel.root_ca_crl held"}
    assert duty.run(svc, trigger="import", actor="test").changes == []  # judged once


def test_a_row_that_becomes_visible_late_is_still_judged(svc):
    """PostgreSQL hands out ids before commit: a scan that saw ids 1 and 3 remembers 2 and judges it
    when it appears (here: rows written with explicit ids, in that order)."""
    _june(svc)
    with svc.db.read() as s:
        rows = sorted(s.query(CollateralItem), key=lambda r: r.id)
        top = changes.high_water(s)
        template = {c.name: getattr(rows[0], c.name) for c in CollateralItem.__table__.columns if c.name != "id"}
    with svc.db.transaction() as s:
        s.add(CollateralItem(**{**template, "id": top + 2, "key": "late-b", "sha256": "b" * 64}))
    with svc.db.read() as s:
        scan = changes.scan(s, top)
    assert scan.high_water == top + 2 and scan.missing == frozenset({top + 1})
    assert [c.key for c in scan.changes] == ["late-b"]
    with svc.db.transaction() as s:
        s.add(CollateralItem(**{**template, "id": top + 1, "key": "late-a", "sha256": "a" * 64}))
    with svc.db.read() as s:
        again = changes.scan(s, scan.high_water, also=scan.missing)
    assert again.missing == frozenset() and [c.key for c in again.changes] == ["late-a"]


def test_a_failed_run_is_recorded_keeps_its_mark_and_readyz_says_so(svc, monkeypatch):
    duty.run(svc, trigger="worker", actor="test")
    mark = duty.last_state(svc)["high_water"]
    _june(svc)

    def broken(*args, **kwargs):
        raise RuntimeError("re-appraisal broke")

    monkeypatch.setattr(duty, "reappraise", broken)
    with pytest.raises(RuntimeError):
        duty.run(svc, trigger="worker", actor="test")
    state = duty.last_state(svc)
    assert state["high_water"] == mark and state["last_run"]["error"] == "RuntimeError"
    st = operational_state(svc)
    assert st.collateral_duty_error == "RuntimeError" and st.collateral_duty_age_seconds is not None
    assert st.degraded(60, anchoring=False, collateral_duty_interval=3600) == [
        "collateral duty: the last run failed (RuntimeError)"]
    assert st.degraded(60, anchoring=False) == []  # the duty is off: not a reason
    monkeypatch.undo()
    out = duty.run(svc, trigger="worker", actor="test")  # retried whole: the same changes again
    assert out.outcome == "done" and len(out.changes) == 4
    assert "error" not in duty.last_state(svc)["last_run"]


def test_readyz_names_a_duty_that_stopped_running():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    st = OpsState(now=now, log_size=0, checkpoint_size=0, checkpoint_age_seconds=None, anchored_size=None,
                  anchor_lag_leaves=None, anchor_lag_seconds=None, challenges=0,
                  collateral_duty_age_seconds=4 * 3600.0)
    assert st.degraded(60, anchoring=False, collateral_duty_interval=3600) == [
        "collateral duty: last run 14400 s ago"]
    assert st.degraded(60, anchoring=False, collateral_duty_interval=7200) == []
