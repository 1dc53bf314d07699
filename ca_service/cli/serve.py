"""``ca-service serve``: the API under gunicorn, with the log publisher and the anchor worker."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

log = logging.getLogger("ca_service.serve")


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int,
              help="threads per worker (gthread): a slow client holds one thread, never a worker")
@click.option("--worker-class", default="ca_service.serving.DeadlineThreadWorker", show_default=True,
              help="gunicorn worker class (the default is gthread with a per-request read deadline)")
@click.option("--request-timeout", default=30.0, show_default=True, type=float,
              help="seconds a client has to send a request's headers and body (and to read a response chunk)")
@click.option("--timeout", "worker_timeout", default=30, show_default=True, type=int,
              help="worker timeout: a request still running this long is answered 503 service.worker_timeout "
                   "(and its worker retired when it runs --graceful-timeout longer); a worker whose main "
                   "loop is silent this long is killed and replaced")
@click.option("--graceful-timeout", default=30, show_default=True, type=int,
              help="seconds a worker may finish in-flight requests after SIGTERM")
@click.option("--keep-alive", default=5, show_default=True, type=int, help="idle keep-alive seconds")
@click.option("--publish-interval", default=5.0, show_default=True, type=float,
              help="seconds between log checkpoints (0: do not publish from this server)")
@click.option("--rate-limit", type=float, default=None,
              help="requests a second per client to each of POST /v1/challenges, /v1/certificates, "
                   "/v1/attestations; 0: off [default: CA_SERVICE_RATE_LIMIT or 10]")
@click.option("--rate-limit-burst", type=int, default=None,
              help="requests a client may send at once before the rate applies "
                   "[default: CA_SERVICE_RATE_LIMIT_BURST or 50]")
@click.option("--anchor/--no-anchor", "anchor", default=None,
              help="run the anchor worker (default: on when CA_SERVICE_CHAIN_RPC is a real RPC URL, off on the "
                   "embedded chain)")
@click.option("--collateral-refresh/--no-collateral-refresh", "collateral_refresh", default=None,
              help="run the collateral duty: refresh due collateral (CA_SERVICE_COLLATERAL=online) and "
                   "re-appraise what a change concerns, every CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS "
                   "[default: CA_SERVICE_COLLATERAL_REFRESH or on]")
def serve(bind: str, workers: int, threads: int, worker_class: str, request_timeout: float, worker_timeout: int,
          graceful_timeout: int, keep_alive: int, publish_interval: float, rate_limit: float | None,
          rate_limit_burst: int | None, anchor: bool | None, collateral_refresh: bool | None) -> None:
    """Run the HTTP API with gunicorn.

    Every worker runs the checkpoint publisher, the collateral duty and (optionally) the anchor worker
    in background threads; each takes a database lock per step, so one of them does the work at a time. Workers
    die with their master (PR_SET_PDEATHSIG). GUNICORN_CMD_ARGS is honoured and wins over these
    options, as with the gunicorn command.
    """
    from gunicorn.app.base import BaseApplication

    from ca_service.config import Settings

    settings = Settings.from_env()
    settings = _rate_limit_settings(settings, rate_limit, rate_limit_burst)
    # prometheus-client's multiprocess mode: set before prometheus_client is imported anywhere
    _metrics_dir(settings)
    from ca_service.api.app import create_app

    # the embedded chain is kept in CA_SERVICE_HOME and shared by processes: --anchor works on it too
    run_anchor = anchor if anchor is not None else settings.chain_rpc != "embedded"
    if collateral_refresh is not None:
        settings = settings.with_(collateral_refresh=collateral_refresh)
    os.environ["CA_SERVICE_REQUEST_TIMEOUT_SECONDS"] = str(request_timeout)
    _check_replica(settings)

    def post_fork(server: Any, worker: Any) -> None:
        from ca_service.serving import die_with_parent

        die_with_parent(server.pid)

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

    def post_worker_init(worker: Any) -> None:
        from ca_service.logs import configure_json_logging

        configure_json_logging()
        svc = worker.wsgi.extensions["ca_service"]
        from ca_service.services.challenges import start_purger

        start_purger(svc, svc.settings.challenge_purge_interval_seconds)
        if publish_interval > 0:
            from ca_service.services.log import start_publisher

            start_publisher(svc, interval=publish_interval)
        if run_anchor:
            from ca_service.cli.anchor import serve_background

            serve_background(svc)
        if svc.settings.collateral_refresh:
            from ca_service.services.collateral_duty import start_duty

            start_duty(svc, interval=svc.settings.collateral_refresh_interval_seconds,
                       within=svc.settings.collateral_refresh_within)

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": bind, "workers": workers, "threads": threads,
                               "worker_class": worker_class, "timeout": worker_timeout,
                               "graceful_timeout": graceful_timeout, "keepalive": keep_alive,
                               "accesslog": "-", "control_socket_disable": True,
                               "post_fork": post_fork, "post_worker_init": post_worker_init,
                               "child_exit": child_exit}.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)
            # GUNICORN_CMD_ARGS, as the gunicorn command reads it (it wins over the options above)
            env_args = self.cfg.get_cmd_args_from_env()
            if env_args:
                parsed = self.cfg.parser().parse_args(env_args)
                for key, value in vars(parsed).items():
                    if value is not None and key != "args" and key.lower() in self.cfg.settings:
                        self.cfg.set(key.lower(), value)

        def load(self) -> Any:
            return create_app(settings)

    _App().run()


def _rate_limit_settings(settings: Any, rate: float | None, burst: int | None) -> Any:
    """The rate limit the options ask for, with its bucket table shared by the workers: made empty
    here, in the master, before they fork (``$CA_SERVICE_HOME/run/ratelimit``)."""
    from pathlib import Path

    from ca_service.errors import ConfigurationError
    from ca_service.ratelimit import Buckets

    changes: dict[str, Any] = {}
    if rate is not None:
        changes["rate_limit_per_second"] = rate
    if burst is not None:
        changes["rate_limit_burst"] = burst
    try:
        settings = settings.with_(**changes)
    except ConfigurationError as exc:
        raise click.BadParameter(exc.detail) from exc
    if settings.rate_limit_per_second > 0 and not settings.rate_limit_state:
        path = Buckets.create(Path(settings.home) / "run" / "ratelimit")
        settings = settings.with_(rate_limit_state=str(path))
    return settings


def _check_replica(settings: Any) -> None:
    """Refuse to start a replica that disagrees with the log it shares (origin, one per log)."""
    from sqlalchemy.exc import SQLAlchemyError

    from ca_service.errors import LogOriginMismatch
    from ca_service.services.container import Services
    from ca_service.services.log import check_log_origin

    svc = Services.create(settings)
    try:
        check_log_origin(svc)
    except LogOriginMismatch as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from exc
    except SQLAlchemyError:
        log.warning("database unavailable at start: the log origin is checked before each checkpoint")
    finally:
        svc.close()


def _metrics_dir(settings: Any) -> str:
    """PROMETHEUS_MULTIPROC_DIR: the caller's, or ``$CA_SERVICE_HOME/prometheus``; emptied at start
    (files of dead processes would otherwise be summed in)."""
    from pathlib import Path

    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.home / "prometheus")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for f in path.glob("*.db"):
        f.unlink()
    if not os.access(path, os.W_OK):
        raise click.ClickException(f"the metrics directory {path} is not writable")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return str(path)
