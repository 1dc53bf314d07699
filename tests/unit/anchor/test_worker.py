"""The anchoring worker on the embedded chain and SQLite: batching, write-ahead, restarts."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ca_service.anchor.chain import ChainClient, InsecureEmbeddedChainWarning
from ca_service.anchor.worker import AnchorPolicy, AnchorWorker
from ca_service.db.models.anchor import Anchor, AnchorContract
from ca_service.db.session import Database
from ca_service.errors import ChainUnavailable

from .fakes import ListSource, StepClock


def _worker(db: Database, chain: ChainClient, source: ListSource, clock: StepClock, **kw) -> AnchorWorker:
    policy = AnchorPolicy(**{"interval_seconds": 60, "max_leaves": 100, **kw})
    return AnchorWorker(db, chain, source, clock, policy)


def _settle(worker: AnchorWorker, limit: int = 10) -> list[str]:
    actions = []
    for _ in range(limit):
        r = worker.tick()
        actions.append(r.action)
        if r.action in ("idle", "skipped", "waiting", "final"):
            if r.action == "final":
                continue
            break
    return actions


def _anchors(db: Database) -> list[Anchor]:
    with db.read() as s:
        return list(s.scalars(select(Anchor).order_by(Anchor.size)))


def test_deploys_then_anchors_newest_checkpoint(sqlite_db, embedded_chain) -> None:
    source, clock = ListSource(), StepClock()
    w = _worker(sqlite_db, embedded_chain, source, clock)
    assert w.tick().action == "deployed"
    assert w.tick().action == "idle"
    source.publish(3)
    source.publish(5)
    assert [w.tick().action for _ in range(3)] == ["sent", "included", "final"]
    (a,) = _anchors(sqlite_db)
    assert (a.size, a.state, a.attempts) == (5, "final", 1)
    with sqlite_db.read() as s:
        c = s.scalars(select(AnchorContract)).one()
    assert embedded_chain.latest(c.address).size == 5
    assert w.tick().action == "skipped"  # size has not grown


def test_batches_by_interval_or_leaf_count(sqlite_db, embedded_chain) -> None:
    source, clock = ListSource(), StepClock()
    w = _worker(sqlite_db, embedded_chain, source, clock, interval_seconds=60, max_leaves=100)
    w.tick()
    source.publish(10)
    _settle(w)
    source.publish(20)
    assert w.tick().action == "waiting"  # 10 leaves, 0 s: not due
    clock.advance(61)
    assert w.tick().action == "sent"     # T elapsed
    _settle(w)
    source.publish(200)
    assert w.tick().action == "sent"     # N leaves pending
    _settle(w)
    assert [a.size for a in _anchors(sqlite_db)] == [10, 20, 200]
    assert {a.state for a in _anchors(sqlite_db)} == {"final"}


def test_crash_after_write_ahead_before_broadcast(sqlite_db, embedded_chain, monkeypatch) -> None:
    source, clock = ListSource(), StepClock()
    w = _worker(sqlite_db, embedded_chain, source, clock)
    w.tick()
    source.publish(4)

    def down(raw: bytes) -> None:
        raise ChainUnavailable("broadcast: chain RPC unreachable")

    monkeypatch.setattr(embedded_chain, "broadcast", down)
    assert w.tick().action == "error"
    (a,) = _anchors(sqlite_db)
    assert a.state == "sent" and a.raw_tx and "unreachable" in a.last_error
    monkeypatch.undo()
    # A new process: a new worker over the same database and chain.
    w2 = _worker(sqlite_db, embedded_chain, source, clock)
    assert [w2.tick().action for _ in range(3)] == ["rebroadcast", "included", "final"]
    (a,) = _anchors(sqlite_db)
    assert a.state == "final" and len(a.tx_hashes) == 1


def test_already_anchored_on_chain_is_reconciled_not_resent(sqlite_db, embedded_chain) -> None:
    """The tx went out but the worker died before recording it: the contract says it is done."""
    source, clock = ListSource(), StepClock()
    w = _worker(sqlite_db, embedded_chain, source, clock)
    w.tick()
    cp = source.publish(9)
    contract = w.contract()
    gas = embedded_chain.estimate_anchor_gas(contract.address, 9, cp.root, cp.checkpoint_hash)
    signed = embedded_chain.sign_anchor(contract.address, 9, cp.root, cp.checkpoint_hash,
                                        nonce=embedded_chain.nonce(), fees=embedded_chain.fees(), gas=gas * 2)
    embedded_chain.broadcast(signed.raw)
    assert w.tick().action == "included"
    (a,) = _anchors(sqlite_db)
    assert a.tx_hash == signed.tx_hash and a.attempts == 0


def test_second_worker_is_locked_out(sqlite_db, embedded_chain) -> None:
    source, clock = ListSource(), StepClock()
    w1 = _worker(sqlite_db, embedded_chain, source, clock)
    w2 = _worker(sqlite_db, embedded_chain, source, clock)
    with w1.lock() as got:
        assert got
        assert w2.tick().action == "locked"
    assert w2.tick().action == "deployed"


def test_a_worker_whose_lease_expired_and_was_taken_writes_and_sends_nothing(sqlite_db, embedded_chain,
                                                                              monkeypatch) -> None:
    """w1 stalls mid-tick past its lease; w2 takes the lease over; w1's next write and its check
    before a broadcast refuse (anchor.lease_lost), and its tick ends 'locked' without sending."""
    from ca_service.errors import AnchorLeaseLost

    source, clock = ListSource(), StepClock()
    # a long lease: w1's heartbeat (every third of it) does not beat while the test runs
    w1 = _worker(sqlite_db, embedded_chain, source, clock, lease_seconds=600, interval_seconds=0, max_leaves=1)
    w2 = _worker(sqlite_db, embedded_chain, source, clock, lease_seconds=600, interval_seconds=0, max_leaves=1)
    assert w1.tick().action == "deployed"
    source.publish(4)
    with w1.lock() as got:
        assert got
        assert w2.tick().action == "locked"           # w1's lease is live
        clock.advance(601)                            # w1 stalls past its lease (no renewal)
        assert w2.tick().action == "sent"             # w2 takes over and anchors
        with pytest.raises(AnchorLeaseLost):
            w1.ensure_lease()
        with pytest.raises(AnchorLeaseLost):
            w1._save(_anchors(sqlite_db)[0].id, last_error="stale")
    sent = []
    monkeypatch.setattr(embedded_chain, "broadcast", lambda raw: sent.append(raw))
    w1._lost.set()                                    # still inside a tick that lost the lease:
    with pytest.raises(AnchorLeaseLost):
        w1.ensure_lease()
    assert sent == [] and _anchors(sqlite_db)[0].last_error != "stale"


def test_lease_is_one_row_and_a_new_holder_is_logged(sqlite_db, embedded_chain) -> None:
    from ca_service.db.models.anchor import AnchorWorkerLease

    source, clock = ListSource(), StepClock()
    w1 = _worker(sqlite_db, embedded_chain, source, clock, lease_seconds=5)
    w2 = _worker(sqlite_db, embedded_chain, source, clock, lease_seconds=5)
    assert w1.tick().action == "deployed"
    with sqlite_db.read() as s:
        (lease,) = s.scalars(select(AnchorWorkerLease))
    assert lease.holder == w1.holder and lease.expires_at == clock.now()   # released at the end of the tick
    assert w2.tick().action == "idle"
    with sqlite_db.read() as s:
        assert s.get(AnchorWorkerLease, "anchor-worker").holder == w2.holder


def test_embedded_contract_from_a_dead_process_is_retired(sqlite_db, embedded_chain) -> None:
    source, clock = ListSource(), StepClock()
    w = _worker(sqlite_db, embedded_chain, source, clock)
    w.tick()
    with pytest.warns(InsecureEmbeddedChainWarning):
        fresh = ChainClient.in_process()  # the next process: a new in-process chain
    w2 = _worker(sqlite_db, fresh, source, clock)
    assert w2.tick().action == "deployed"
    with sqlite_db.read() as s:
        rows = list(s.scalars(select(AnchorContract).order_by(AnchorContract.id)))
    assert rows[0].retired_at is not None and rows[1].retired_at is None


@pytest.mark.filterwarnings("ignore")
def test_run_loop_stops(sqlite_db, embedded_chain) -> None:
    import threading

    source, clock = ListSource(), StepClock()
    source.publish(2)
    w = _worker(sqlite_db, embedded_chain, source, clock)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), kwargs={"poll_seconds": 0.05})
    t.start()
    for _ in range(100):
        if _anchors(sqlite_db) and _anchors(sqlite_db)[0].state == "final":
            break
        stop.wait(0.05)
    stop.set()
    t.join(5)
    assert _anchors(sqlite_db)[0].state == "final"


def test_run_loop_backs_off_from_poll_seconds_after_a_busy_tick(sqlite_db, embedded_chain, caplog) -> None:
    """A tick that had more to do asks for the next at once (delay 0); when the database or the RPC
    then fails, the loop backs off from poll_seconds (2, 4, 8, ... 60), not from 0: a doubled 0 kept
    retrying in a tight loop, a log line each time (thousands of lines in seconds under serve)."""
    from sqlalchemy.exc import OperationalError

    from ca_service.anchor.worker import TickResult

    w = _worker(sqlite_db, embedded_chain, ListSource(), StepClock())
    results: list[object] = [TickResult("sent"), *[OperationalError("SELECT 1", {}, Exception("down"))] * 7,
                             TickResult("sent"), ChainUnavailable("rpc down")]

    def tick() -> TickResult:
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        if isinstance(r, ChainUnavailable):
            return TickResult("error", detail=r.detail)
        return r  # type: ignore[return-value]

    waits: list[float] = []

    class Stop:
        def is_set(self) -> bool:
            return not results

        def wait(self, delay: float) -> bool:
            waits.append(delay)
            return False

    w.tick = tick  # type: ignore[method-assign]
    w.run(Stop(), poll_seconds=2.0, max_backoff=60.0)  # type: ignore[arg-type]
    assert waits == [0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 0.0, 2.0]
    assert sum("database unavailable" in r.getMessage() for r in caplog.records) == 7
