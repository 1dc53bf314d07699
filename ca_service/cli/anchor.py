"""``ca-service anchor``: deploy the anchor contract, run the anchoring worker (once or forever)."""

from __future__ import annotations

import json
import logging
import threading

import click

from ca_service.anchor.worker import AnchorPolicy, TickResult
from ca_service.config import Settings
from ca_service.services.anchoring import make_worker, policy_from_settings
from ca_service.services.container import Services

log = logging.getLogger(__name__)


def _services(ctx: click.Context) -> Services:
    obj = ctx.find_object(Services)
    if obj is not None:
        return obj
    svc = Services.create(Settings.from_env())
    ctx.call_on_close(svc.close)
    return svc


def _policy(svc: Services, interval: float | None, leaves: int | None, finalized: bool) -> AnchorPolicy:
    extra: dict[str, object] = {"use_finalized_tag": finalized}
    if interval is not None:
        extra["interval_seconds"] = interval
    if leaves is not None:
        extra["max_leaves"] = leaves
    return policy_from_settings(svc, **extra)


def run_once(svc: Services, policy: AnchorPolicy | None = None, *, max_steps: int = 8) -> list[TickResult]:
    """Advance until the worker has nothing more to do right now (idle, waiting or an error)."""
    worker = make_worker(svc, policy=policy)
    results = []
    for _ in range(max_steps):
        r = worker.tick()
        results.append(r)
        if r.action in ("idle", "skipped", "waiting", "locked", "error", "final", "failed"):
            break
    return results


def _echo(r: TickResult) -> None:
    click.echo(json.dumps({"action": r.action, "size": r.size, "detail": r.detail}))


@click.group("anchor", invoke_without_command=True)
@click.option("--once", is_flag=True,
              help="Anchor the newest checkpoint now (T and N do not apply), advance until idle, exit.")
@click.pass_context
def anchor(ctx: click.Context, once: bool) -> None:
    """Anchor the log's checkpoints on the configured EVM chain (CA_SERVICE_CHAIN_RPC)."""
    if ctx.invoked_subcommand is not None:
        return
    if not once:
        ctx.invoke(run)
        return
    svc = _services(ctx)
    results = run_once(svc, _policy(svc, 0.0, 1, False))
    for r in results:
        _echo(r)
    ctx.exit(1 if results and results[-1].action in ("error", "failed") else 0)


@anchor.command()
@click.pass_context
def deploy(ctx: click.Context) -> None:
    """Deploy the CheckpointAnchor contract when none is recorded for this chain; print it."""
    svc = _services(ctx)
    worker = make_worker(svc)
    with worker.lock() as got:
        if not got:
            raise click.ClickException("another anchoring worker holds the lock")
        rec = worker.deploy()
    click.echo(json.dumps({"chain_id": rec.chain_id, "contract": rec.address,
                           "deploy_tx_hash": "0x" + rec.deploy_tx_hash.hex(),
                           "block_number": rec.deploy_block_number, "publisher": rec.publisher}))


@anchor.command("forget-contract")
@click.option("--yes", is_flag=True, help="Confirm: the chain really changed (anchor.chain_changed).")
@click.pass_context
def forget_contract(ctx: click.Context, yes: bool) -> None:
    """Retire the recorded anchor contract of this chain id, after a real change of chain; its
    anchors stay as history and the next anchoring deploys a new contract."""
    if not yes:
        raise click.UsageError("this starts a new anchor history on this chain: pass --yes")
    svc = _services(ctx)
    worker = make_worker(svc)
    with worker.lock() as got:
        if not got:
            raise click.ClickException("another anchoring worker holds the lock")
        rec = worker.forget_contract()
    click.echo(json.dumps({"retired": rec.address if rec is not None else None}))


@anchor.command()
@click.option("--once", is_flag=True, help="Advance until idle, then exit.")
@click.option("--interval", type=float, default=None, help="Anchor at least every T seconds (default 60).")
@click.option("--leaves", type=int, default=None, help="Or once N leaves are unanchored (default 1000).")
@click.option("--finalized", is_flag=True, help="Also accept the chain's `finalized` tag as final.")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between ticks.")
@click.pass_context
def run(ctx: click.Context, once: bool, interval: float | None, leaves: int | None, finalized: bool,
        poll: float) -> None:
    """Run the anchoring worker (forever unless --once)."""
    svc = _services(ctx)
    policy = _policy(svc, interval, leaves, finalized)
    if once:
        results = run_once(svc, policy)
        for r in results:
            _echo(r)
        ctx.exit(1 if results and results[-1].action in ("error", "failed") else 0)
    stop = threading.Event()
    try:
        make_worker(svc, policy=policy).run(stop, poll_seconds=poll)
    except KeyboardInterrupt:
        stop.set()


def serve_background(services: Services, *, poll_seconds: float = 2.0,
                     policy: AnchorPolicy | None = None) -> tuple[threading.Thread, threading.Event]:
    """Start the worker in a daemon thread (for ``serve``); set the returned event to stop it.

    Safe with any number of replicas: each tick takes the database lock, so one anchors at a time.
    """
    stop = threading.Event()
    worker = make_worker(services, policy=policy)
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll_seconds": poll_seconds},
                              name="anchor-worker", daemon=True)
    thread.start()
    return thread, stop
