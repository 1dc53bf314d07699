"""Air-gapped bundles as an operator makes them: ``collateral fetch --for EVIDENCE... BUNDLE`` against a
loopback replay of Intel PCS / AMD KDS, ``import`` into a CA (PostgreSQL in a PostgreSQL run),
``export``, ``import`` into a fresh CA, and the evidence verifies with the CA's cache alone. AMD KDS
throttling (429 + Retry-After), PCS ``update=early`` and both PCS issuer-chain header spellings."""

from __future__ import annotations

import base64
import hashlib
import json
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ca_service.cli.main import cli
from ca_service.collateral.fetchers import RequestsFetcher, load_bundle, retry_after_seconds
from ca_service.services import collateral as cs
from ca_service.services.collateral_bundles import fetch_for
from tests.collateral.fixtures import fresh_services, outcome
from tests.collateral.make_bundle import amd_entries, intel_entries
from tests.collateral.replay import mirror_args, mirrors, serve
from tests.vectors.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]
TDX = "tdx/gcp-c3-v4-uptodate"


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()

SNP = "snp/milan-virtee-vcek"


def _vector(path: str, collateral: str | None = None) -> Any:
    return next(v for v in load_manifest() if v.path == path and (collateral is None or
                                                                  v.files.get("collateral", "").startswith(collateral)))


def _recorded(tdx_collateral: str = "collateral-2025-10") -> list[dict[str, Any]]:
    """What the vendors served at the time of the two vectors: their own collateral, as PCS/KDS serve it."""
    tdx = _vector(TDX, tdx_collateral)
    return intel_entries(tdx.dir / tdx_collateral) + amd_entries(_vector(SNP).dir)


def _env(monkeypatch: pytest.MonkeyPatch, svc: Any) -> None:
    monkeypatch.setenv("CA_SERVICE_HOME", str(svc.settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", svc.settings.database_url)
    monkeypatch.setenv("CA_SERVICE_PROFILE", svc.settings.profile)


def test_bundle_round_trip_fetch_import_export_import(tmp_path, tmp_path_factory, db_url_factory, monkeypatch):
    tdx, snp = _vector(TDX, "collateral-2025-10"), _vector(SNP)
    (tmp_path / "quote.bin").write_bytes(tdx.read("quote"))
    (tmp_path / "report.bin").write_bytes(snp.read("report"))
    runner = CliRunner()
    with serve(_recorded()) as (app, base):
        res = runner.invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "quote.bin"),
                                  "--for", str(tmp_path / "report.bin"), str(tmp_path / "fetched.json"),
                                  *mirror_args(base), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["refused"] == [] and len(out["fetched"]) == 7  # Intel: TCB Info, QE Identity, 2 CRLs; AMD: 3
    assert len(app.requests) == 7  # exactly what the evidence needs, each once
    fetched = load_bundle((tmp_path / "fetched.json").read_bytes())
    assert sorted(r.url for r in fetched) == sorted(out["fetched"])

    a = fresh_services(tmp_path_factory, db_url_factory)
    b = fresh_services(tmp_path_factory, db_url_factory)
    try:
        _env(monkeypatch, a)
        res = runner.invoke(cli, ["collateral", "import", str(tmp_path / "fetched.json")], catch_exceptions=False)
        assert res.exit_code == 0 and res.output.startswith("imported 7 item(s)")
        res = runner.invoke(cli, ["collateral", "export", str(tmp_path / "exported.json")], catch_exceptions=False)
        assert res.exit_code == 0 and "exported 7 item(s)" in res.output
        exported = load_bundle((tmp_path / "exported.json").read_bytes())
        assert {(r.url, r.body) for r in exported} == {(r.url, r.body) for r in fetched}
        _env(monkeypatch, b)
        res = runner.invoke(cli, ["collateral", "import", "--json", str(tmp_path / "exported.json")],
                            catch_exceptions=False)
        assert res.exit_code == 0 and len(json.loads(res.output)["added"]) == 7
        # the fresh CA now judges both items by its own cache, as their own collateral does
        for v, kind, ev, own in ((tdx, "tdx-quote", tdx.read("quote"), [tdx.read("collateral")]),
                                 (snp, "snp-report", snp.read("report"), [snp.read(r) for r in ("vek", "cert_chain", "crl")])):
            supplied = cs.collateral_for(b, kind, ev, v.verify_time)
            got = outcome(kind, ev, supplied, v.verify_time)
            assert got["ok"] and got == outcome(kind, ev, own, v.verify_time)
        # `evidence verify` with no --collateral: the CA's cache, and the items it used
        (tmp_path / "r.bin").write_bytes(snp.read("report"))
        for v, kind, f, n in ((tdx, "tdx-quote", "quote.bin", 4), (snp, "snp-report", "r.bin", 3)):
            res = runner.invoke(cli, ["evidence", "verify", kind, str(tmp_path / f), "--at", v.verify_time.isoformat(),
                                      "--home", str(b.settings.home), "--json"], catch_exceptions=False)
            got = json.loads(res.output)
            assert res.exit_code == 0 and got["ok"], got.get("error")
            used = got["collateral_used"]
            assert len(used) == n and {u["sha256"] for u in used} <= {_sha(r.body) for r in exported}
            assert all(u["source"].startswith("https://") and u["next_update"] for u in used)
        # and POST /v1/attestations with no collateral, as of the quote's time
        from ca_service.api.app import create_app
        from ca_service.clock import FixedClock
        from ca_service.services import policies
        from ca_service.services.container import Services

        ref, _ = policies.apply_policy(b, (REPO / "policies" / "tdx-cvm.yaml").read_text(), actor="test")
        policies.activate(b, "tdx-cvm", ref.version, actor="test")
        at_b = Services.create(b.settings, clock=FixedClock(tdx.verify_time))
        try:
            r = create_app(services=at_b).test_client().post("/v1/attestations", json={
                "policy": "tdx-cvm", "evidence": [{"type": "tdx-quote",
                                                   "data": base64.b64encode(tdx.read("quote")).decode()}]})
            assert r.status_code == 200, r.get_json()
            sub = r.get_json()["ear_claims"]["submods"]["tdx-quote"]
            assert sub["ear.status"] == "affirming"
            assert sorted(u["kind"] for u in sub["ca-service.collateral-used"]) == [
                "intel.pck_crl", "intel.qe_identity.tdx", "intel.root_ca_crl", "intel.tcb_info.tdx"]
            assert r.get_json()["ear_claims"]["ca-service.collateral-expires-item"] == "intel.pck_crl"
        finally:
            at_b.close()
        # export of B re-imports into A as "already cached", nothing added
        _env(monkeypatch, a)
        res = runner.invoke(cli, ["collateral", "import", "--json", str(tmp_path / "exported.json")],
                            catch_exceptions=False)
        assert json.loads(res.output)["added"] == [] and len(json.loads(res.output)["already_cached"]) == 7
    finally:
        a.close()
        b.close()


def test_export_orders_history_so_a_fresh_ca_takes_both_dates(tmp_path, tmp_path_factory, db_url_factory,
                                                               monkeypatch):
    """A CA holding the 2025-06 and 2025-10 collateral exports both; a fresh CA imports both without a
    rollback refusal (older TCB evaluation data first) and verifies the vector as of either date."""
    a = fresh_services(tmp_path_factory, db_url_factory)
    b = fresh_services(tmp_path_factory, db_url_factory)
    try:
        entries = _recorded("collateral-2025-10") + _recorded("collateral-2025-06")  # newest first: a bad order
        cs.import_bundle(a, json.dumps(_recorded("collateral-2025-06")).encode())
        cs.import_bundle(a, json.dumps(_recorded("collateral-2025-10")).encode())
        assert entries
        runner = CliRunner()
        _env(monkeypatch, a)
        assert runner.invoke(cli, ["collateral", "export", str(tmp_path / "all.json")]).exit_code == 0
        _env(monkeypatch, b)
        res = runner.invoke(cli, ["collateral", "import", str(tmp_path / "all.json")], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        for date in ("collateral-2025-06", "collateral-2025-10"):
            v = _vector(TDX, date)
            got = outcome("tdx-quote", v.read("quote"), cs.collateral_for(b, "tdx-quote", v.read("quote"),
                                                                         v.verify_time), v.verify_time)
            assert got == outcome("tdx-quote", v.read("quote"), [v.read("collateral")], v.verify_time)
            assert got["ok"]
    finally:
        a.close()
        b.close()


def test_kds_429_retry_after_is_honoured(tmp_path):
    snp = _vector(SNP)
    waits: list[float] = []
    with serve(_recorded()) as (app, base):
        app.throttle["/vcek/v1/Milan/cert_chain"] = (2, "7")  # KDS: 429 twice, "come back in 7 s"
        fetcher = RequestsFetcher(mirrors=mirrors(base), sleep=waits.append)
        result = fetch_for([("report.bin", snp.read("report"))], fetcher)
        assert result.ok and len(result.fetched) == 3
        assert waits == [7.0, 7.0] and result.waited_seconds == 14.0
        assert app.requests.count("/vcek/v1/Milan/cert_chain") == 3
        # throttled for longer than the cap: not waited for, reported as the vendor's 429
        app.throttle["/vcek/v1/Milan/cert_chain"] = (1, "3600")
        waits.clear()
        result = fetch_for([("report.bin", snp.read("report"))],
                           RequestsFetcher(mirrors=mirrors(base), sleep=waits.append))
        assert waits == []
        assert [(r["code"], r["evidence"]) for r in result.refused] == [("collateral.fetch_failed", "report.bin")]
        assert "429" in result.refused[0]["detail"]
        # no Retry-After: exponential backoff 1 s, 2 s
        app.throttle["/vcek/v1/Milan/crl"] = (2, "")
        result = fetch_for([("report.bin", snp.read("report"))],
                           RequestsFetcher(mirrors=mirrors(base), sleep=waits.append))
        assert result.ok and waits == [1.0, 2.0]
        # and through the CLI, with a real one-second wait
        app.throttle["/vcek/v1/Milan/cert_chain"] = (1, "1")
        (tmp_path / "r.bin").write_bytes(snp.read("report"))
        res = CliRunner().invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "r.bin"),
                                       str(tmp_path / "b.json"), *mirror_args(base)], catch_exceptions=False)
        assert res.exit_code == 0 and "waited 1s for vendor throttling" in res.output


def test_retry_after_http_date():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_update_early_and_both_issuer_chain_header_names(tmp_path):
    """``--update early`` asks PCS for ``update=early`` on TCB Info and QE Identity (and only there);
    the older ``SGX-TCB-Info-Issuer-Chain`` spelling verifies like ``TCB-Info-Issuer-Chain``."""
    tdx = _vector(TDX, "collateral-2025-10")
    entries = intel_entries(tdx.dir / "collateral-2025-10")
    early = []
    for e in entries:
        e = dict(e)
        if "/tcb?" in e["url"]:
            e["url"] += "&update=early"
            h = dict(e["headers"])
            h["SGX-TCB-Info-Issuer-Chain"] = h.pop("TCB-Info-Issuer-Chain")
            e["headers"] = h
        elif e["url"].endswith("/qe/identity"):
            e["url"] += "?update=early"
        early.append(e)
    (tmp_path / "q.bin").write_bytes(tdx.read("quote"))
    with serve(early) as (app, base):
        res = CliRunner().invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "q.bin"), "--update", "early",
                                       str(tmp_path / "b.json"), *mirror_args(base), "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert sorted(q for q in app.requests if "update=early" in q) == [
            "/tdx/certification/v4/qe/identity?update=early", "/tdx/certification/v4/tcb?fmspc=00806F050000&update=early"]
        assert not any("update" in q for q in app.requests if "pckcrl" in q or q.endswith(".der"))
        # standard (the default) asks without update=: the replay has no such recording -> refused, exit 1
        res = CliRunner().invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "q.bin"),
                                       str(tmp_path / "c.json"), *mirror_args(base)])
        assert res.exit_code == 1 and "collateral.fetch_failed" in res.output


def test_fetch_refuses_what_it_cannot_serve(tmp_path):
    """Evidence that is not a quote or report, and a VLEK report (KDS publishes no VLEKs): refused with
    the reason; what could be fetched is still written."""
    vlek = _vector("snp/milan-aws-vlek")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "vlek.bin").write_bytes(vlek.read("report"))
    (tmp_path / "q.bin").write_bytes(_vector(TDX, "collateral-2025-10").read("quote"))
    with serve(_recorded()) as (_, base):
        res = CliRunner().invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "junk.bin"),
                                       "--for", str(tmp_path / "vlek.bin"), "--for", str(tmp_path / "q.bin"),
                                       str(tmp_path / "b.json"), *mirror_args(base), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout if hasattr(res, "stdout") else res.output)
    assert [(Path(r["evidence"]).name, r["code"]) for r in out["refused"]] == [
        ("junk.bin", "evidence.unsupported"), ("vlek.bin", "evidence.collateral_missing")]
    assert len(load_bundle((tmp_path / "b.json").read_bytes())) == 4
