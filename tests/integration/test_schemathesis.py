"""A bounded schemathesis run against ``ca-service serve`` on loopback (issue 16, "The OpenAPI
document"): the served document is the contract, and the live server may not drift from it.

Checks, on every operation of the API, with and without an admin token (``ignored_auth``), in
schemathesis' coverage and fuzzing phases, positive and negative data (``--mode all``):
``not_a_server_error`` (0 5xx), ``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``, ``response_headers_conformance``, ``negative_data_rejection`` (data
the document calls invalid is refused), ``unsupported_method``, ``allow_header_conformance``,
``missing_required_header``, ``ignored_auth`` and, instead of ``positive_data_acceptance``,
``no_form_refusal_of_valid_data`` (st_run/hooks.py: data the document calls valid is never refused
for its form). Real identifiers (a certificate issued through ``agent request``, the ``sim`` policy)
are offered through schemathesis dictionaries, so the routes behind them answer more than 404.

Bounded: at most ``MAX_EXAMPLES`` cases per operation and phase, deterministic generation (the same
cases every run), 2 workers; about a minute on 2 cores. On SQLite and on PostgreSQL
(``CA_SERVICE_TEST_DATABASE``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_serve_faults import _free_port, _wait_ready

pytest.importorskip("schemathesis", reason="schemathesis comes with the test extras: pip install -e '.[test]'")

CLI = [sys.executable, "-m", "ca_service.cli"]
HERE = Path(__file__).resolve().parent / "st_run"
MAX_EXAMPLES = 20
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def live(tmp_path_factory, db_url_factory):
    home = tmp_path_factory.mktemp("st")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory()}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=180)
    assert init.returncode == 0, init.stderr
    token = subprocess.run([*CLI, "token", "create", "--role", "admin", "--name", "schemathesis", "--json"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert token.returncode == 0, token.stderr
    secret = json.loads(token.stdout)["token"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # the rate limit is tested on its own (test_rate_limit.py); here a 429 would only cut coverage short
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--rate-limit", "0",
                             "--publish-interval", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_ready(url, proc, timeout=120)
        # warm both workers (a cold one imports for seconds on a loaded machine; schemathesis
        # gives the document 10 s)
        for _ in range(4):
            assert requests.get(f"{url}/v1/openapi.json", timeout=60).status_code == 200
        out = home / "agent"
        agent = subprocess.run([*CLI, "agent", "request", "--server", url, "--policy", "sim", "--out", str(out),
                                "--sim", "--dns", "st.cvm.local"], env=env, capture_output=True, text=True,
                               timeout=120)
        assert agent.returncode == 0, agent.stderr
        serial = json.loads((out / "response.json").read_text())["serial"]
        yield {"url": url, "home": home, "env": env, "token": secret, "serial": serial, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _config(path: Path, serial: str) -> None:
    """The committed config plus dictionaries of real identifiers of this server."""
    base = (HERE / "schemathesis.toml").read_text()
    extra = f'''
[dictionaries.serials]
values = ["{serial}"]

[dictionaries.policies]
values = ["sim"]

[dictionaries.versions]
values = [1]

[parameters]
"path.serial" = {{ dictionary = "serials", probability = 0.5 }}
"path.name" = {{ dictionary = "policies", probability = 0.5 }}
"path.version" = {{ dictionary = "versions", probability = 0.5 }}
"query.policy" = {{ dictionary = "policies", probability = 0.5 }}
'''
    # [[operations]] tables must come after the plain tables they would otherwise swallow
    head, sep, ops = base.partition("\n[[operations]]")
    path.write_text(head + extra + sep + ops)


def _events(report: Path) -> list[dict]:
    out = []
    for line in report.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_schemathesis_finds_no_5xx_and_no_drift(live, tmp_path):
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    assert st, "the schemathesis CLI (st) is not installed"
    config = tmp_path / "schemathesis.toml"
    _config(config, live["serial"])
    report = tmp_path / "events.ndjson"
    doc_copy = tmp_path / "openapi.json"
    doc_copy.write_text(requests.get(f"{live['url']}/v1/openapi.json", timeout=60).text)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"), "CA_SERVICE_ST_DOCUMENT": str(doc_copy)}
    t0 = time.monotonic()
    run = subprocess.run(
        [st, "--no-color", "--config-file", str(config), "run", f"{live['url']}/v1/openapi.json",
         "--header", f"Authorization: Bearer {live['token']}", "--max-examples", str(MAX_EXAMPLES),
         "--phases", "coverage,fuzzing,stateful", "--mode", "all", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance,use_after_free,ensure_resource_availability,"
                             "object_level_authorization",
         "--wait-for-schema", "60", "--report", "ndjson", "--report-ndjson-path", str(report)],
        env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    tail = run.stdout[-12000:]
    assert run.returncode == 0, f"schemathesis found drift or errors ({elapsed:.0f} s):\n{tail}\n{run.stderr[-3000:]}"

    # not vacuous: every operation of the document was exercised, with many cases, and real ones
    events = _events(report)
    doc = json.loads(doc_copy.read_text())
    # the document itself is what schemathesis loads, not an operation it tests
    operations = {f"{m.upper()} {p}" for p, ms in doc["paths"].items() for m in ms} - {"GET /v1/openapi.json"}
    tested, cases, statuses = set(), 0, {}
    for ev in events:
        finished = ev.get("ScenarioFinished")
        if not finished:
            continue
        rec = finished["recorder"]
        tested.add(rec["label"])
        cases += len(rec.get("cases", {}))
        for interaction in rec.get("interactions", {}).values():
            status = (interaction.get("response") or {}).get("status_code")
            if status is not None:
                statuses[status] = statuses.get(status, 0) + 1
    assert operations <= tested, f"operations never tested: {sorted(operations - tested)}"
    assert cases >= 20 * len(operations), cases
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.get(200, 0) + statuses.get(201, 0) >= 100, statuses  # real answers, not only refusals
    print(f"schemathesis: {cases} cases on {len(tested)} operations in {elapsed:.0f} s; statuses {sorted(statuses.items())}")
