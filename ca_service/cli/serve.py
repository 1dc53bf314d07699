"""``ca-service serve``: the API under gunicorn, with the log publisher and the anchor worker."""

from __future__ import annotations

import logging
from typing import Any

import click

log = logging.getLogger("ca_service.serve")


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--publish-interval", default=5.0, show_default=True, type=float,
              help="seconds between log checkpoints (0: do not publish from this server)")
@click.option("--anchor/--no-anchor", "anchor", default=None,
              help="run the anchor worker (default: on when CA_SERVICE_CHAIN_RPC is a real RPC URL)")
def serve(bind: str, workers: int, threads: int, publish_interval: float, anchor: bool | None) -> None:
    """Run the HTTP API with gunicorn.

    Every worker runs the checkpoint publisher and (optionally) the anchor worker in background
    threads; both take a database lock per step, so one of them does the work at a time.
    """
    from gunicorn.app.base import BaseApplication

    from ca_service.api.app import create_app
    from ca_service.config import Settings

    settings = Settings.from_env()
    run_anchor = anchor if anchor is not None else settings.chain_rpc != "embedded"
    if run_anchor and settings.chain_rpc == "embedded":
        raise click.UsageError("the embedded chain lives in one process; anchor with a real RPC under serve")

    def post_worker_init(worker: Any) -> None:
        from ca_service.logs import configure_json_logging

        configure_json_logging()
        svc = worker.wsgi.extensions["ca_service"]
        if publish_interval > 0:
            from ca_service.services.log import start_publisher

            start_publisher(svc, interval=publish_interval)
        if run_anchor:
            from ca_service.cli.anchor import serve_background

            serve_background(svc)

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": bind, "workers": workers, "threads": threads, "accesslog": "-",
                               "control_socket_disable": True, "post_worker_init": post_worker_init}.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    _App().run()
