"""`ca-service evidence replay` and `evidence verify tdx-quote --event-log` on the real event-log
vectors, as a relying party or a developer runs them (files on disk, exit codes, JSON)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vectors.manifest import Vector, vectors_dir, vectors_for

CLI = [sys.executable, "-m", "ca_service.cli", "evidence"]
V = {v.path: v for v in vectors_for("tdx-eventlog")}


def _log(v: Vector) -> str:
    return str(v.dir / v.files["ccel" if "ccel" in v.files else "event_log_json"])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("v", list(V.values()), ids=list(V))
def test_replay_json_per_vector(v: Vector):
    p = _run("replay", str(v.dir / v.files["quote"]), _log(v), "--json")
    out = json.loads(p.stdout)
    assert out["signature_verified"] is False and "NOT verified" in out["note"]
    assert [r["match"] for r in out["rtmrs"]] == v.expected["rtmr_replay_matches"]
    assert [r["replayed"] for r in out["rtmrs"]] == v.expected["rtmrs"]
    assert [r["quote"] for r in out["rtmrs"]] == v.expected["quote_rtmrs"]
    assert p.returncode == (0 if all(v.expected["rtmr_replay_matches"]) else 1)


def test_replay_text_says_it_does_not_verify_the_signature():
    v = V["tdx-eventlog/neg-trustee-tdshim-vs-debug-quote"]
    p = _run("replay", str(v.dir / v.files["quote"]), _log(v))
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert lines[0] == "event log: ccel, 5 extending events"
    assert lines[1].startswith("RTMR0 MISMATCH replayed 2dc71230")
    assert lines[5].startswith("RTMR2 match    replayed 0000")
    assert "signature was NOT verified" in p.stdout


def test_replay_of_a_broken_log_is_a_code():
    v = V["tdx-eventlog/gce-cos113-ccel"]
    p = _run("replay", str(v.dir / v.files["quote"]), str(v.dir / v.files["quote"]), "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout)["error"]["code"] == "evidence.event_log_malformed"


def test_verify_with_event_log_puts_the_replay_in_the_claims():
    v = V["tdx-eventlog/nearmpc-dstack-json"]
    p = _run("verify", "tdx-quote", str(v.dir / v.files["quote"]), "--collateral", str(v.dir / v.files["collateral"]),
             "--at", v.verify_time.isoformat(), "--event-log", _log(v), "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["ok"] is True, out.get("error")
    assert out["claims"]["event_log_format"] == "dstack-json"
    assert [r["name"] for r in out["claims"]["runtime_events"]][-1] == "mpc-image-digest"
    assert {"name": "event_log.replay", "result": "pass"}.items() <= next(
        c for c in out["checks"] if c["name"] == "event_log.replay").items()
    text = _run("verify", "tdx-quote", str(v.dir / v.files["quote"]), "--collateral",
                str(v.dir / v.files["collateral"]), "--at", v.verify_time.isoformat(), "--event-log", _log(v))
    assert text.returncode == 0
    assert "event log (dstack-json): 29 events replay to RTMR0-3; loaded digests: none" in text.stdout


def test_verify_refuses_the_log_of_another_boot_naming_the_rtmr():
    neg, pos = V["tdx-eventlog/neg-gce-cos113-other-boot"], V["tdx-eventlog/gce-cos113-ccel"]
    coll = vectors_dir() / pos.expected["dcap"][0]["collateral_ref"]
    p = _run("verify", "tdx-quote", str(neg.dir / neg.files["quote"]), "--collateral", str(coll),
             "--at", neg.verify_time.isoformat(), "--event-log", _log(neg), "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["ok"] is False
    assert out["error"]["code"] == "evidence.event_log_mismatch" and out["error"]["field"] == "rtmr0"
    # without the log the same quote verifies: the refusal is the replay's
    ok = _run("verify", "tdx-quote", str(neg.dir / neg.files["quote"]), "--collateral", str(coll),
              "--at", neg.verify_time.isoformat(), "--json")
    assert ok.returncode == 0 and "event_log" not in json.loads(ok.stdout)["claims"]


def test_ima_without_event_log_is_refused():
    v = V["tdx-eventlog/gce-cos113-ccel"]
    coll = vectors_dir() / v.expected["dcap"][0]["collateral_ref"]
    p = _run("verify", "tdx-quote", str(v.dir / v.files["quote"]), "--collateral", str(coll),
             "--at", v.verify_time.isoformat(), "--ima", _log(v), "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["error"]["code"] == "evidence.event_log_unsupported"
