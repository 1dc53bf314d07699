"""``ca-service demo``: the three-party story on the embedded default, printing each step.

A fresh CA (insecure-dev profile, SQLite, the embedded chain kept in its home) serves on a loopback port; then the
story of ``demo_story.py`` (vendor, CVM, loader, lab and clinic, CA, auditor) and the refusals of
``demo_refusals.py``. Exit 0 iff every step held.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests

from ca_service.config import Settings


class Steps:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.results.append((name, passed))
        mark = click.style("PASS", fg="green") if passed else click.style("FAIL", fg="red")
        click.echo(f"  [{mark}] {name}" + (f": {detail}" if detail else ""))
        return passed

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
        except Exception as exc:  # the demo reports every failure as a failed step
            return self.check(name, False, f"{type(exc).__name__}: {exc}")
        return self.check(name, True, detail)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok in self.results)


def _listening() -> socket.socket:
    """A loopback socket bound and listening now, on a port the kernel picks: the server takes it over
    (``fd=``), so nothing else can take the port between choosing it and serving on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


def _serve(app: Any, sock: socket.socket) -> Any:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = int(sock.getsockname()[1])
    server = make_server("127.0.0.1", port, app, threaded=True, fd=sock.fileno())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@click.command("demo")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), help="keep the demo CA here")
@click.option("--serve", is_flag=True, help="keep the server up afterwards and print the explorer's URL (Ctrl-C stops)")
def demo(home: Path | None, serve: bool) -> None:
    """Run the whole issuance story end to end and verify it."""
    warnings.simplefilter("ignore")
    tmp = None
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="ca-service-demo-"))
        home = tmp
    try:
        ok = _run(home, serve=serve)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    click.echo(click.style("demo: every check passed", fg="green") if ok else click.style("demo: FAILED", fg="red"))
    sys.exit(0 if ok else 1)


def _run(home: Path, *, serve: bool = False) -> bool:
    from ca_service.api.app import create_app
    from ca_service.cli.demo_refusals import REFUSALS, explain
    from ca_service.cli.demo_story import STORY, Story
    from ca_service.services.bootstrap import init_ca, load_sim_tee
    from ca_service.services.container import Services

    steps = Steps()
    sock = _listening()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # The log's origin is the one `ca-service serve` derives by default (127.0.0.1:8080), not this run's random
    # port: a home kept with --home is one log under one origin, so the demo runs on it again and `serve` serves it.
    settings = Settings.from_env(home=home, profile="insecure-dev", public_url=url, database_url="",
                                 chain_rpc="embedded", log_origin=Settings(home=home).log_origin)
    kept = (home / "ca-service.db").exists()
    what = "the demo CA kept" if kept else "a fresh CA"
    click.echo(f"0. CA operator: {what} in {home} (insecure-dev profile, SQLite, embedded chain), serving {url}")
    steps.run("ca-service init", lambda: "; ".join(init_ca(settings).notes))
    svc = Services.create(settings)
    server = _serve(create_app(services=svc), sock)
    try:
        steps.run("GET /readyz", lambda: requests.get(f"{url}/readyz", timeout=10).json()["status"])
        story = Story(steps=steps, url=url, home=home, svc=svc, tee=load_sim_tee(settings))
        held = all(step(story) for step in STORY)  # a step that fails stops the story: the next needs it
        if held:
            click.echo("Then what is refused:")
            for refusal in REFUSALS:
                refusal(story)
            from ca_service.services.log import publish_checkpoint

            publish_checkpoint(svc)  # the explorer shows every entry under a checkpoint
        explain()
        if serve:
            _hold(url, story.loader["serial"] if story.loader else "", steps.passed)
    finally:
        server.shutdown()
        server.server_close()
        sock.close()
        svc.close()
    return steps.passed


def _hold(url: str, serial: str, passed: bool) -> None:
    """``--serve``: keep the demo CA up for a newcomer to browse, until Ctrl-C."""
    import time

    click.echo(click.style("demo: every check passed", fg="green") if passed else click.style("demo: FAILED", fg="red"))
    click.echo(f"\nThe explorer: {url}/  (the demo's certificate: {url}/certificates/{serial})")
    click.echo("Follow it to its policy, its log entry and its anchor. The API is under the same URL. Ctrl-C stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped")
