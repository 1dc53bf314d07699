"""Fetchers over real HTTP on loopback: a small werkzeug server replays the recorded vendor responses
(never the real vendors). Fetch on a cache miss, refresh before expiry, rollback refused on refresh,
and the CLI (import, refresh --mirror, list)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from ca_service.cli.main import cli
from ca_service.clock import FixedClock
from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import ALLOWED_HOSTS, Kind
from ca_service.collateral.fetchers import FakeFetcher, RequestsFetcher, load_bundle
from ca_service.collateral.store import newest_per_key
from ca_service.services import collateral as cs
from tests.collateral.fixtures import bundle_bytes, bundle_entries, fresh_services, outcome  # noqa: F401
from tests.collateral.replay import VendorReplay, mirrors, serve
from tests.vectors.manifest import load_manifest


@pytest.fixture
def vendor(bundle_entries) -> Iterator[tuple[VendorReplay, str]]:
    with serve(bundle_entries) as pair:
        yield pair


@pytest.fixture
def svc(tmp_path_factory, db_url_factory):
    s = fresh_services(tmp_path_factory, db_url_factory)
    yield s
    s.close()


_mirrors = mirrors


def _latest_for(entries, url_part: str, before: str) -> list[dict[str, Any]]:
    return [e for e in entries if url_part in e["url"] and e["fetched_at"] <= before]


def test_fetch_on_miss_over_http_then_from_cache(svc, vendor):
    app, base = vendor
    fetcher = RequestsFetcher(clock=svc.clock, mirrors=_mirrors(base))
    vectors = [v for v in load_manifest() if v.tee in ("tdx", "snp") and v.path != "snp/milan-aws-vlek"]
    # The replay serves the newest recording per URL, as the vendor would at the time of the last one;
    # pick vectors whose own collateral is that newest recording.
    tdx = next(v for v in vectors if v.path == "tdx/dcapqvl-v5-no-tcb-level")
    snp = next(v for v in vectors if v.path == "snp/milan-virtee-vcek")
    for v, kind, ev, own in (
        (tdx, "tdx-quote", tdx.read("quote"), [tdx.read("collateral")]),
        (snp, "snp-report", snp.read("report"), [snp.read(r) for r in ("vek", "cert_chain", "crl")]),
    ):
        before = len(app.requests)
        supplied = cs.collateral_for(svc, kind, ev, v.verify_time, fetcher=fetcher)
        assert len(app.requests) > before  # fetched over HTTP on the miss
        assert outcome(kind, ev, supplied, v.verify_time) == outcome(kind, ev, own, v.verify_time)
        n = len(app.requests)
        assert cs.collateral_for(svc, kind, ev, v.verify_time, fetcher=fetcher) == supplied
        assert len(app.requests) == n  # then from the cache: no request
    assert "/vcek/v1/Milan/cert_chain" in app.requests  # the VCEK's chain was fetched to verify it


def test_vendor_404_and_outage_are_fetch_failed(svc, vendor):
    app, base = vendor
    app.set([])
    v = next(v for v in load_manifest() if v.tee == "tdx")
    with pytest.raises(Exception) as ei:
        cs.collateral_for(svc, "tdx-quote", v.read("quote"), v.verify_time,
                          fetcher=RequestsFetcher(mirrors=_mirrors(base)))
    assert ei.value.code == "collateral.fetch_failed"
    dead = RequestsFetcher(mirrors=_mirrors("http://127.0.0.1:9"), timeout=(1.0, 1.0))
    with pytest.raises(Exception) as ei:
        cs.collateral_for(svc, "tdx-quote", v.read("quote"), v.verify_time, fetcher=dead)
    assert ei.value.code == "collateral.fetch_failed"


def test_refresh_before_expiry(svc, vendor, bundle_entries):
    """The cache holds the 2025-06 collateral of FMSPC 00806F050000; near its nextUpdate, refresh
    fetches (over HTTP) what the vendor now serves, and collateral_for moves to it."""
    app, base = vendor
    url = endpoints.tcb_info("tdx", bytes.fromhex("00806F050000")).url
    june = [e for e in bundle_entries if e["url"] == url and e["fetched_at"] < "2025-07"]
    october = [e for e in bundle_entries if e["url"] == url and e["fetched_at"] > "2025-10"]
    assert june and october
    cs.import_bundle(svc, json.dumps(june).encode())
    with svc.db.read() as session:
        [row] = newest_per_key(session, [Kind.TDX_TCB_INFO])
    june_next = row.next_update
    # ten days before nextUpdate: nothing due within 7 days, then everything within 30
    svc.clock = FixedClock(june_next - timedelta(days=10))
    fetcher = RequestsFetcher(clock=svc.clock, mirrors=_mirrors(base))
    assert cs.refresh(svc, fetcher, within=timedelta(days=7)).to_json() == \
        {"refreshed": [], "unchanged": [], "refused": [], "changed": []}
    app.set(october)
    result = cs.refresh(svc, fetcher, within=timedelta(days=30))
    assert result.refreshed == [url] and result.ok
    assert result.changed == []  # Intel's re-issue of evaluation 17: no verdict can change
    with svc.db.read() as session:
        [row] = newest_per_key(session, [Kind.TDX_TCB_INFO])
    assert row.next_update > june_next
    # refreshed again: the vendor serves the same bytes -> unchanged
    svc.clock = FixedClock(row.next_update - timedelta(days=1))
    assert cs.refresh(svc, fetcher, within=timedelta(days=7)).unchanged == [url]


def test_collateral_for_refreshes_within_the_margin(svc, bundle_entries):
    """Online, collateral_for fetches again what is within REFRESH_MARGIN of its nextUpdate; a failed
    refresh (404 here for everything else) keeps the cached item in use."""
    url = endpoints.tcb_info("tdx", bytes.fromhex("00806F050000")).url
    cs.import_bundle(svc, json.dumps([e for e in bundle_entries if e["fetched_at"] < "2025-06-20"]).encode())
    with svc.db.read() as session:
        row = next(r for r in newest_per_key(session, [Kind.TDX_TCB_INFO]) if r.key == "00806f050000")
    fake = FakeFetcher()
    for r in load_bundle(json.dumps([e for e in bundle_entries if e["url"] == url]).encode()):
        fake.add(r)  # the last recording (2025-10) is what the vendor serves now
    v = next(v for v in load_manifest() if v.path == "tdx/gcp-c3-v4-uptodate")
    at = row.next_update - cs.REFRESH_MARGIN / 2
    far = row.issue_date + timedelta(days=1)
    assert cs.collateral_for(svc, "tdx-quote", v.read("quote"), far, fetcher=fake)
    assert fake.calls == []  # nothing near expiry: the cache answers
    cs.collateral_for(svc, "tdx-quote", v.read("quote"), at, fetcher=fake)
    assert url in fake.calls
    with svc.db.read() as session:
        rows = [r for r in newest_per_key(session, [Kind.TDX_TCB_INFO]) if r.key == "00806f050000"]
    assert rows[0].issue_date > row.issue_date  # the newer recording is cached


def test_refresh_refuses_a_rollback_and_keeps_the_newer(svc, vendor, bundle_entries):
    app, base = vendor
    url = endpoints.tcb_info("tdx", bytes.fromhex("90C06F000000")).url

    def ev(e):
        return json.loads(base64.b64decode(e["body_b64"]))["tcbInfo"]["tcbEvaluationDataNumber"]

    tcbs = [e for e in bundle_entries if e["url"] == url]
    cs.import_bundle(svc, json.dumps([e for e in tcbs if ev(e) == 18]).encode())
    app.set([e for e in tcbs if ev(e) == 17])  # a stale mirror serves eval 17
    newest = max(r.fetched_at for r in load_bundle(json.dumps(tcbs).encode()))
    svc.clock = FixedClock(newest + timedelta(days=40))
    result = cs.refresh(svc, RequestsFetcher(mirrors=_mirrors(base)), within=timedelta(days=7))
    assert [r["code"] for r in result.refused] == ["collateral.rollback_refused"]
    with svc.db.read() as session:
        [row] = newest_per_key(session, [Kind.TDX_TCB_INFO])
    assert row.tcb_evaluation_data_number == 18


def test_cli_import_refresh_list(svc, vendor, bundle_bytes, tmp_path, monkeypatch):
    app, base = vendor
    monkeypatch.setenv("CA_SERVICE_HOME", str(svc.settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", svc.settings.database_url)
    monkeypatch.setenv("CA_SERVICE_PROFILE", svc.settings.profile)
    runner = CliRunner()
    f = tmp_path / "bundle.json"
    f.write_bytes(bundle_bytes)
    res = runner.invoke(cli, ["collateral", "import", str(f)], catch_exceptions=False)
    assert res.exit_code == 0 and res.output.startswith(f"imported {len(json.loads(bundle_bytes))} item(s)")
    bad = json.loads(bundle_bytes)
    bad[0]["url"] = "https://pccs.example/sgx/certification/v4/pckcrl?ca=platform"
    f.write_text(json.dumps(bad))
    res = runner.invoke(cli, ["collateral", "import", str(f)])
    assert res.exit_code == 1 and "collateral.host_not_allowed" in res.output
    listed = json.loads(runner.invoke(cli, ["collateral", "list", "--json"], catch_exceptions=False).output)
    assert {r["kind"] for r in listed} >= {"intel.tcb_info.tdx", "intel.tcb_info.sgx", "amd.vcek", "amd.vcek_crl"}
    # refresh over the loopback mirror: everything in the vectors expired long ago, so all is due;
    # the vendor replay serves the same recordings -> unchanged, except resources it has no recording of.
    res = runner.invoke(cli, ["collateral", "refresh", "--within", "1d", "--json",
                              *[f"--mirror={h}={base}" for h in sorted(ALLOWED_HOSTS)]])
    out = json.loads(res.output)
    assert out["unchanged"] and not out["refreshed"]
    assert res.exit_code == (1 if out["refused"] else 0)
    res = runner.invoke(cli, ["collateral", "refresh", "--mirror", "evil.example=http://127.0.0.1:1"])
    assert res.exit_code == 1 and "collateral.host_not_allowed" in res.output
