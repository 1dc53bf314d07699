"""The explorer in a real browser: Debian's headless Chromium driven by Selenium and chromedriver.

The demo makes a CA (`ca-service demo --home`), the explorer serves it over HTTP on loopback, and
the test browses as a relying party would: search the demo's serial, read the certificate page
(status, policy version, inclusion verified by the server and again in the browser), follow the
policy link, see the log and the anchor, then revoke with the CLI and see "revoked". Hostile
values (a subject, a SAN, EAR claims, a policy description) never run a script: no dialog opens
and the console logs no error. A screenshot of the certificate page is left in the test's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HOSTILE = '<script>alert("x")</script>'

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - the skip below says why
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (HAVE_SELENIUM and os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium",
)


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "ca-service"
    return [str(script)] if script.exists() else ["ca-service"]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("explorer-demo") / "ca"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CA_SERVICE_DATABASE_URL", None)
    out = subprocess.run([*_cli(), "demo", "--home", str(home)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return home


@pytest.fixture(scope="module")
def served(demo_home: Path) -> Iterator[tuple[str, Any]]:
    import sqlite3

    from werkzeug.serving import make_server

    from ca_service.api.app import create_app
    from ca_service.config import Settings
    from ca_service.services.container import Services

    # The demo served on a random port but signed its checkpoints under the origin a default `serve`
    # derives (127.0.0.1:8080), so the kept home is served with no CA_SERVICE_LOG_ORIGIN.
    with sqlite3.connect(demo_home / "ca-service.db") as conn:
        note = conn.execute("SELECT note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1").fetchone()[0]
    settings = Settings(home=demo_home, profile="insecure-dev")
    assert note.split("\n", 1)[0] == settings.log_origin
    svc = Services.create(settings)
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", svc
    finally:
        server.shutdown()
        svc.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=420,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _no_script_ran(driver: Any) -> None:
    try:
        alert = driver.switch_to.alert
        text = alert.text
        alert.dismiss()
        raise AssertionError(f"a dialog opened: {text!r}")
    except NoAlertPresentException:
        pass
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def _serials_from_db(home: Path) -> tuple[str, str]:
    """The demo's first CVM certificate (covered by its final anchor; the demo revokes it, and so its
    loader's, in its refusals) and the first certificate still valid (issued after that anchor)."""
    import sqlite3

    with sqlite3.connect(home / "ca-service.db") as conn:
        anchored = conn.execute("SELECT MAX(size) FROM anchors WHERE state = 'final'").fetchone()[0]
        covered = conn.execute("SELECT serial FROM certificates WHERE log_index < ? AND policy_name = 'sim' "
                               "ORDER BY log_index LIMIT 1", (anchored,)).fetchone()
        valid = conn.execute("SELECT serial FROM certificates WHERE status = 'valid' ORDER BY issued_at LIMIT 1"
                             ).fetchone()
    return str(covered[0]), str(valid[0])


def test_relying_party_browses_the_demo(browser: Any, served: tuple[str, Any], demo_home: Path,
                                        tmp_path: Path) -> None:
    base, svc = served
    serial, valid_serial = _serials_from_db(demo_home)
    wait = WebDriverWait(browser, 20)

    browser.get(base + "/")
    assert "What this CA issued" in browser.find_element(By.TAG_NAME, "h1").text
    # keyboard: the first Tab lands on the skip link, which leads to the main content
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    assert int(browser.find_element(By.ID, "log-size").text) >= 3
    box = browser.find_element(By.ID, "q")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=q]").text == "Search"
    box.send_keys(serial)
    box.submit()
    wait.until(ec.presence_of_element_located((By.ID, "cert-status")))
    assert browser.current_url.endswith(f"/certificates/{serial}")
    assert "revoked" in browser.find_element(By.ID, "cert-status").text  # by the demo's cascade step
    assert browser.find_element(By.ID, "ear-status").text == "warning"
    assert "sim version 1" in browser.find_element(By.ID, "policy").text
    assert "verified by the server" in browser.find_element(By.ID, "proof-status").text
    # the demo's embedded chain is kept in its home: served by another process, its anchor is confirmed final
    assert "state final" in browser.find_element(By.ID, "anchor-status").text

    browser.find_element(By.ID, "reverify").click()
    wait.until(lambda d: "verified" in d.find_element(By.ID, "browser-result").text)
    result = browser.find_element(By.ID, "browser-result").text
    assert result.startswith("verified in this browser"), result
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "certificate-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    _no_script_ran(browser)

    # a wrong log key: the browser check fails, naming why
    vkey = browser.find_element(By.ID, "vkey")
    vkey.clear()
    vkey.send_keys("other+00000000+AQ" + "A" * 42 + "=")
    browser.find_element(By.ID, "reverify").click()
    wait.until(lambda d: "NOT verified" in d.find_element(By.ID, "browser-result").text)

    browser.find_element(By.CSS_SELECTOR, "#policy a").click()
    wait.until(ec.presence_of_element_located((By.ID, "policy-version")))
    assert browser.find_element(By.ID, "policy-version").text == "1"

    browser.get(base + "/log")
    assert serial in browser.find_element(By.TAG_NAME, "main").text
    browser.get(base + "/anchors")
    badges = {b.text for b in browser.find_elements(By.CSS_SELECTOR, "main table .badge")}
    assert badges == {"final"}, badges
    browser.get(base + "/integrity-reports")
    assert browser.find_elements(By.CSS_SELECTOR, "main table tbody a")

    env = {**os.environ, "CA_SERVICE_HOME": str(demo_home), "CA_SERVICE_PROFILE": "insecure-dev",
           "PYTHONWARNINGS": "ignore"}
    env.pop("CA_SERVICE_DATABASE_URL", None)
    browser.get(f"{base}/certificates/{valid_serial}")
    assert "valid" in browser.find_element(By.ID, "cert-status").text
    assert "No final anchor covers this entry yet" in browser.find_element(By.ID, "anchor-status").text
    out = subprocess.run([*_cli(), "revoke", valid_serial, "--reason", "superseded"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    browser.get(f"{base}/certificates/{valid_serial}")
    status = browser.find_element(By.ID, "cert-status").text
    assert "revoked" in status and "superseded" in status
    _no_script_ran(browser)


def test_hostile_values_never_run(browser: Any, served: tuple[str, Any]) -> None:
    from ca_service.services.policies import apply_policy
    from tests.integration.test_explorer import _hostile_certificate

    base, svc = served
    serial = _hostile_certificate(svc)
    doc = {"name": "hostile-browser", "description": HOSTILE + '<img src=x onerror="alert(2)">',
           "evidence": {"required": ["sim"], "sim": {"debug": False}},
           "certificate": {"max_lifetime": "1h", "key_types": ["ec-p256"], "san": {"dns": ["*.cvm.local"]}}}
    apply_policy(svc, json.dumps(doc), actor="test")
    browser.get(f"{base}/certificates/{serial}")
    assert HOSTILE in browser.find_element(By.ID, "subject").text.replace("\\", "")  # RFC 4514-escaped text, not run
    _no_script_ran(browser)
    browser.get(f"{base}/policies/hostile-browser/versions/1")
    assert HOSTILE in browser.find_element(By.ID, "policy-description").text
    _no_script_ran(browser)
    browser.get(f"{base}/search?q=%3Cscript%3Ealert(3)%3C%2Fscript%3E")
    _no_script_ran(browser)
