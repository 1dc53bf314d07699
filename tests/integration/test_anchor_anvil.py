# ruff: noqa: F811  (pytest fixtures imported from anchor_fixtures)
"""The anchoring worker against a real Anvil node: confirmations, outage, reorg, fee bump, kill.

In every case each size is anchored exactly once on the canonical chain, every anchor row ends
final, and the contract's latest checkpoint is the log's newest.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from ca_service.anchor.worker import AnchorWorker
from ca_service.db.models.anchor import Anchor
from ca_service.db.session import Database
from tests.unit.anchor.fakes import ListSource, StepClock

from .anchor_fixtures import REPO, AnvilNode, anchor_db, anchored_sizes, anvil, client, worker  # noqa: F401

pytestmark = pytest.mark.anvil


def _rows(db: Database) -> list[Anchor]:
    with db.read() as s:
        return list(s.scalars(select(Anchor).order_by(Anchor.size)))


def _drive(w: AnchorWorker, node: AnvilNode, until: str = "final", limit: int = 12) -> list[str]:
    """Tick, mining a block whenever the worker waits for depth, until ``until``."""
    seen = []
    for _ in range(limit):
        r = w.tick()
        seen.append(r.action)
        if r.action == until:
            return seen
        if r.action == "waiting":
            node.rpc("anvil_mine", "0x1")
    raise AssertionError(f"never reached {until}: {seen}")


def _assert_exactly_once(db: Database, node: AnvilNode, w: AnchorWorker, source: ListSource) -> None:
    rows = _rows(db)
    assert rows and {r.state for r in rows} == {"final"}, [(r.size, r.state, r.last_error) for r in rows]
    contract = w.contract()
    counts = anchored_sizes(client(node), contract.address)
    assert counts == {r.size: 1 for r in rows}
    new = source.newest()
    state = client(node).latest(contract.address)
    assert (state.size, state.root, state.checkpoint_hash) == (new.size, new.root, new.checkpoint_hash)


def test_deploy_anchor_and_wait_for_confirmations(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock, confirmations=2)
    assert w.tick().action == "deployed"
    source.publish(3)
    assert [w.tick().action for _ in range(3)] == ["sent", "included", "waiting"]  # depth 0 of 2
    anvil.rpc("anvil_mine", "0x1")
    assert w.tick().action == "waiting"
    anvil.rpc("anvil_mine", "0x1")
    assert w.tick().action == "final"
    source.publish(8)
    _drive(w, anvil)
    assert w.tick().action == "skipped"
    _assert_exactly_once(anchor_db, anvil, w, source)
    assert [r.gas_used for r in _rows(anchor_db)][1] < 60_000


def test_outage_mid_run_then_restart(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock)
    w.tick()
    source.publish(5)
    anvil.rpc("evm_setAutomine", False)
    assert w.tick().action == "sent"       # in the node's mempool only
    anvil.stop()                           # outage: the mempool is lost, the chain is kept
    for _ in range(2):
        assert w.tick().action == "error"
    (row,) = _rows(anchor_db)
    assert row.state == "sent" and "anchor.chain_unavailable" in row.last_error
    source.publish(6)                      # the log keeps growing during the outage
    anvil.start()
    assert w.tick().action == "rebroadcast"
    _drive(w, anvil)
    assert [r.size for r in _rows(anchor_db)] == [5]
    _drive(w, anvil)                       # then the newest checkpoint
    _assert_exactly_once(anchor_db, anvil, w, source)


def test_reorg_sends_again(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock, confirmations=3)
    w.tick()
    anvil.rpc("anvil_mine", "0x3")         # the deployment stays below the reorg
    source.publish(4)
    assert [w.tick().action for _ in range(2)] == ["sent", "included"]
    before = _rows(anchor_db)[0].block_hash
    anvil.rpc("anvil_reorg", 2, [])        # drops the anchor's block, mines two others
    assert w.tick().action == "reorg"
    assert w.tick().action == "rebroadcast"
    _drive(w, anvil)
    (row,) = _rows(anchor_db)
    assert row.reorgs == 1 and row.block_hash != before
    _assert_exactly_once(anchor_db, anvil, w, source)


def test_fee_bump_replaces_the_same_nonce(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock, bump_after_seconds=30)
    w.tick()
    source.publish(7)
    anvil.rpc("evm_setAutomine", False)
    assert w.tick().action == "sent"
    assert w.tick().action == "waiting"
    clock.advance(31)
    assert w.tick().action == "bumped"
    anvil.rpc("evm_mine")
    anvil.rpc("evm_setAutomine", True)
    _drive(w, anvil)
    (row,) = _rows(anchor_db)
    assert len(row.tx_hashes) == 2 and row.tx_hash.hex() == row.tx_hashes[1]
    assert len({row.nonce}) == 1
    _assert_exactly_once(anchor_db, anvil, w, source)


_KILLED_WORKER = """
import sys, time
from ca_service.anchor.worker import AnchorPolicy, AnchorWorker
from ca_service.anchor.chain import ChainClient
from ca_service.db.session import Database
from tests.unit.anchor.fakes import ListSource, StepClock
db_url, rpc, key = sys.argv[1:4]
source = ListSource(); source.publish(11)
w = AnchorWorker(Database(db_url), ChainClient.connect(rpc, private_key=key, chain_id=31337), source,
                 StepClock(), AnchorPolicy(confirmations=2, interval_seconds=0, max_leaves=1))
while (r := w.tick()).action != "sent":
    pass
print("SENT", flush=True)
time.sleep(600)
"""


def test_worker_killed_between_send_and_confirmation(anchor_db, anvil) -> None:
    from .anchor_fixtures import DEV_KEY

    anvil.rpc("evm_setAutomine", False)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WORKER, anchor_db.url, anvil.url, DEV_KEY],
                            cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    # Deployment needs a mined block: mine until the child has sent its anchor.
    line = b""
    while True:
        anvil.rpc("evm_mine")
        line = proc.stdout.readline() if _ready(proc) else b""
        if line.startswith(b"SENT") or proc.poll() is not None:
            break
    proc.kill()                            # SIGKILL: no cleanup, no goodbye
    proc.wait(10)
    assert line.startswith(b"SENT")
    (row,) = _rows(anchor_db)
    assert row.state == "sent"
    anvil.rpc("evm_mine")
    anvil.rpc("evm_setAutomine", True)
    source, clock = ListSource(), StepClock()
    source.publish(11)
    w = worker(anchor_db, anvil, source, clock)
    _drive(w, anvil)
    (row,) = _rows(anchor_db)
    assert row.attempts == 1 and len(row.tx_hashes) == 1
    _assert_exactly_once(anchor_db, anvil, w, source)


def _ready(proc: subprocess.Popen, timeout: float = 0.2) -> bool:
    import select as sel

    return bool(sel.select([proc.stdout], [], [], timeout)[0])


def test_one_worker_at_a_time(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w1 = worker(anchor_db, anvil, source, clock)
    w2 = worker(anchor_db, anvil, source, clock)
    with w1.lock() as got:
        assert got
        assert w2.tick().action == "locked"
    assert w2.tick().action == "deployed"
