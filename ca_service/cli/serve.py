"""``ca-service serve``: the API under gunicorn."""

from __future__ import annotations

from typing import Any

import click


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int)
def serve(bind: str, workers: int, threads: int) -> None:
    """Run the HTTP API with gunicorn."""
    from gunicorn.app.base import BaseApplication

    from ca_service.api.app import create_app

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": bind, "workers": workers, "threads": threads, "accesslog": "-",
                               "control_socket_disable": True}.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app()

    _App().run()
