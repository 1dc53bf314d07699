"""The anchoring worker: newest checkpoint -> CheckpointAnchor.anchor(), exactly once per size.

One worker at a time: each tick holds a lease row (``anchor_worker_leases``), renewed by a heartbeat
thread while the tick runs and fenced: every write of the tick, and the check just before each
broadcast, locks the row and goes on only while this worker is still its holder. A replica that
freezes (SIGSTOP, a VM pause) or is cut off stops renewing; another takes the lease over once it
expires (``lease_seconds``, 10 s by default), and the frozen one, when it resumes, finds another
holder at its next write and sends nothing (``anchor.lease_lost``). At most one anchor open
(planned, sent or included) at a time, so nonces never race and a reorg cannot reorder anchors.
Each tick:

1. no contract recorded for this chain -> deploy one (or refuse, ``auto_deploy=False``);
2. the open anchor advances one step, reconciling with the contract's own state first:
   - planned: already on chain (``Anchored`` event for this size with our root)? -> included.
     Otherwise sign with the account's next nonce, *record* the signed tx, then broadcast;
   - sent: a receipt for any hash we broadcast -> included; the node forgot the tx (restart,
     outage) -> rebroadcast the same bytes; too long unmined -> replace the same nonce with fees
     +12.5 %;
   - included: the block hash at its height changed or the receipt vanished (reorg) -> planned,
     sent again next tick; deep enough (``confirmations`` blocks on top, or under the chain's
     ``finalized`` tag when asked) -> final;
3. nothing open: plan the newest checkpoint when it has grown, and ``max_leaves`` leaves or
   ``interval_seconds`` have passed since the last anchor.

RPC failures (:class:`ChainError`) leave the row as it is, with ``last_error`` and ``attempts``
updated, so outages and restarts lose nothing: the row and the chain say where to resume.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from ca_service.anchor.chain import ChainClient, Fees, Receipt, artifact
from ca_service.clock import Clock
from ca_service.db.lease import Lease
from ca_service.db.models.anchor import OPEN_STATES, Anchor, AnchorContract
from ca_service.db.session import Database
from ca_service.errors import (
    AnchorChainChanged,
    AnchorContractMissing,
    AnchorLeaseLost,
    AnchorTransactionReverted,
    ChainError,
)

log = logging.getLogger(__name__)

LEASE_NAME = "anchor-worker"


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    note: bytes  # the signed checkpoint note, as published

    @property
    def checkpoint_hash(self) -> bytes:
        return hashlib.sha256(self.note).digest()


class CheckpointSource(Protocol):
    def newest(self) -> Checkpoint | None: ...


@dataclass(frozen=True)
class AnchorPolicy:
    interval_seconds: float = 60.0       # T: anchor at least this often when the log grew
    max_leaves: int = 1000               # N: or as soon as this many leaves are unanchored
    confirmations: int = 2               # blocks on top of the inclusion block
    use_finalized_tag: bool = False      # also accept the chain's `finalized` tag
    bump_after_seconds: float = 30.0     # replace an unmined tx after this long
    max_bumps: int = 6
    gas_margin: float = 1.25
    auto_deploy: bool = True
    lease_seconds: float = 10.0          # a holder that stops renewing is replaced after this long


@dataclass(frozen=True)
class TickResult:
    action: str                # locked | idle | skipped | planned | sent | rebroadcast | bumped
                               # | included | reorg | final | failed | deployed | waiting | error
    size: int | None = None
    detail: str = ""


class AnchorWorker:
    def __init__(self, db: Database, chain: ChainClient, source: CheckpointSource, clock: Clock,
                 policy: AnchorPolicy | None = None) -> None:
        self.db = db
        self.chain = chain
        self.source = source
        self.clock = clock
        self.policy = policy or AnchorPolicy()
        self.lease = Lease(db, clock, LEASE_NAME, seconds=self.policy.lease_seconds, error=AnchorLeaseLost)
        self._contract_checked: int | None = None

    # --- the lease (db/lease.py) ----------------------------------------------------------------

    @property
    def holder(self) -> str:
        """This worker's lease token: host and pid for the operator, a random part to tell workers apart."""
        return self.lease.holder

    @property
    def _lost(self) -> threading.Event:
        return self.lease.lost

    def _fence(self, s: Session) -> None:
        """In a write transaction: lock the lease row and go on only while we hold it (renewing it).

        Raises:
            AnchorLeaseLost (``anchor.lease_lost``): another worker took the lease over.
        """
        self.lease.fence(s)

    def ensure_lease(self) -> None:
        """Just before anything leaves for the chain: still the holder?

        Raises:
            AnchorLeaseLost (``anchor.lease_lost``).
        """
        self.lease.ensure()

    def lock(self) -> AbstractContextManager[bool]:
        """One worker at a time, per tick: the lease row, the same on PostgreSQL and SQLite (a
        session advisory lock held by a frozen replica is never freed: its TCP peer is alive)."""
        return self.lease.hold()

    # --- contract -------------------------------------------------------------------------------

    def contract(self) -> AnchorContract | None:
        """The active contract recorded for this chain instance, verified on chain once."""
        chain_id = self.chain.chain_id
        genesis = self.chain.genesis_hash()
        with self.db.read() as s:
            rec = s.scalars(select(AnchorContract).where(AnchorContract.chain_id == chain_id,
                                                         AnchorContract.retired_at.is_(None))
                            .order_by(AnchorContract.id.desc())).first()
        if rec is None:
            return None
        same_instance = hmac.compare_digest(rec.genesis_hash, genesis)
        if same_instance and self._contract_checked == rec.id:
            return rec
        if not rec.embedded and not same_instance:
            # A node restarted from its state file often reports another genesis hash for the same
            # chain. The chain is ours when it has the chain id, our contract's code and publisher,
            # and the events of the anchors we recorded (not the genesis hash alone).
            why = self._history_mismatch(rec)
            if why is not None:
                raise AnchorChainChanged(
                    f"the RPC serves another chain than the recorded anchor contract's ({why}); if this is "
                    "intended, run `ca-service anchor forget-contract --yes` to start a new anchor history",
                    chain_id=chain_id, contract=rec.address)
            with self.db.transaction() as s:
                self._fence(s)
                s.execute(update(AnchorContract).where(AnchorContract.id == rec.id).values(genesis_hash=genesis))
            log.warning("chain genesis hash changed (node restart); contract and anchors verified on chain",
                        extra={"chain_id": chain_id, "contract": rec.address, "genesis": genesis.hex()})
            same_instance = True
        if not same_instance or not self.chain.code_at(rec.address):
            if not rec.embedded:
                # A real chain lost our contract: fail closed, never silently redeploy over an
                # anchor history.
                raise AnchorChainChanged(
                    f"recorded anchor contract {rec.address} is not on this chain (reset or replaced); if this "
                    "is intended, run `ca-service anchor forget-contract --yes` to start a new anchor history",
                    chain_id=chain_id, contract=rec.address)
            # The embedded chain died with its process: retire the record, deploy anew.
            with self.db.transaction() as s:
                self._fence(s)
                s.execute(update(AnchorContract).where(AnchorContract.id == rec.id)
                          .values(retired_at=self.clock.now()))
            return None
        self._contract_checked = rec.id
        return rec

    def _history_mismatch(self, rec: AnchorContract) -> str | None:
        """Why this chain is not the one ``rec`` was deployed on, or None when code, publisher and
        the newest recorded included/final anchor's event all match."""
        if not self.chain.code_at(rec.address):
            return f"no code at {rec.address}"
        if self.chain.publisher_of(rec.address).lower() != rec.publisher.lower():
            return "the contract's publisher differs"
        with self.db.read() as s:
            last = s.scalars(select(Anchor).where(Anchor.contract_id == rec.id,
                                                  Anchor.state.in_(("included", "final")))
                             .order_by(Anchor.size.desc())).first()
        if last is not None:
            ev = self.chain.find_anchor_event(rec.address, last.size, rec.deploy_block_number)
            if ev is None or ev.root != last.root or ev.checkpoint_hash != last.checkpoint_hash:
                return f"the anchor of size {last.size} is not among the contract's events"
        return None

    def forget_contract(self) -> AnchorContract | None:
        """Retire the active contract record of this chain id (after a real change of chain);
        its anchors stay as history, and the next tick deploys a new contract."""
        with self.db.transaction() as s:
            self._fence(s)
            rec = s.scalars(select(AnchorContract).where(AnchorContract.chain_id == self.chain.chain_id,
                                                         AnchorContract.retired_at.is_(None))
                            .order_by(AnchorContract.id.desc())).first()
            if rec is not None:
                rec.retired_at = self.clock.now()
        self._contract_checked = None
        return rec

    def deploy(self) -> AnchorContract:
        """Deploy CheckpointAnchor (publisher = our key) and record it; the existing one if any."""
        existing = self.contract()
        if existing is not None:
            return existing
        self.ensure_lease()
        d = self.chain.deploy()
        rec = AnchorContract(chain_id=self.chain.chain_id, genesis_hash=self.chain.genesis_hash(),
                             address=d.address, publisher=self.chain.publisher, deploy_tx_hash=d.tx_hash,
                             deploy_block_number=d.block_number, compiler_version=artifact().compiler_version,
                             embedded=self.chain.embedded, deployed_at=self.clock.now())
        with self.db.transaction() as s:
            self._fence(s)
            s.add(rec)
        log.info("anchor contract deployed", extra={"address": d.address, "chain_id": rec.chain_id})
        return rec

    # --- the tick -------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        with self.lock() as got:
            if not got:
                return TickResult("locked")
            try:
                return self._tick()
            except AnchorLeaseLost as exc:
                log.warning("anchor tick stopped (%s): %s", exc.code, exc.detail, extra={"holder": self.holder})
                return TickResult("locked", detail=f"{exc.code}: {exc.detail}")
            except ChainError as exc:
                log.warning("anchor tick failed: %s", exc.detail)
                self._record_error(exc)
                return TickResult("error", detail=f"{exc.code}: {exc.detail}")

    def _tick(self) -> TickResult:
        contract = self.contract()
        if contract is None:
            if not self.policy.auto_deploy:
                raise AnchorContractMissing("no anchor contract recorded: run `ca-service anchor deploy`")
            contract = self.deploy()
            return TickResult("deployed", detail=contract.address)
        vanished = self._recheck_final(contract)
        if vanished is not None:
            return vanished
        with self.db.read() as s:
            open_ = s.scalars(select(Anchor).where(Anchor.contract_id == contract.id,
                                                   Anchor.state.in_(OPEN_STATES))
                              .order_by(Anchor.size)).first()
        if open_ is None:
            planned = self._maybe_plan(contract)
            if planned is None or planned.action != "planned":
                return planned or TickResult("idle")
            with self.db.read() as s:
                open_ = s.scalars(select(Anchor).where(Anchor.contract_id == contract.id,
                                                       Anchor.state == "planned")).one()
        if open_.state == "planned":
            return self._send(contract, open_)
        if open_.state == "sent":
            return self._check_sent(contract, open_)
        return self._check_included(contract, open_)

    def _maybe_plan(self, contract: AnchorContract) -> TickResult | None:
        cp = self.source.newest()
        if cp is None:
            return TickResult("idle", detail="no checkpoint yet")
        now = self.clock.now()
        with self.db.transaction() as s:
            self._fence(s)
            last = s.scalars(select(Anchor).where(Anchor.contract_id == contract.id)
                             .order_by(Anchor.size.desc())).first()
            last_size = last.size if last is not None else 0
            if cp.size <= last_size:
                return TickResult("skipped", cp.size, "size has not grown")
            due = (last is None or cp.size - last_size >= self.policy.max_leaves
                   or (now - last.created_at).total_seconds() >= self.policy.interval_seconds)
            if not due:
                return TickResult("waiting", cp.size, f"{cp.size - last_size} leaves pending")
            s.add(Anchor(contract_id=contract.id, size=cp.size, root=cp.root,
                         checkpoint_hash=cp.checkpoint_hash, state="planned", tx_hashes=[],
                         attempts=0, reorgs=0, created_at=now, updated_at=now))
        return TickResult("planned", cp.size)

    # --- state steps ----------------------------------------------------------------------------

    def _reconcile(self, contract: AnchorContract, a: Anchor) -> TickResult | None:
        """The contract is the source of truth: is this size already anchored (or superseded)?"""
        for h in reversed(a.tx_hashes):
            r = self.chain.receipt(bytes.fromhex(h))
            if r is not None and r.succeeded:
                return self._included(a, r)
        state = self.chain.latest(contract.address)
        if state.size < a.size:
            return None
        ev = self.chain.find_anchor_event(contract.address, a.size, contract.deploy_block_number)
        if ev is not None and ev.root == a.root and ev.checkpoint_hash == a.checkpoint_hash:
            return self._included(a, Receipt(ev.tx_hash, ev.block_number, ev.block_hash, True, 0))
        why = ("another root is anchored at this size" if ev is not None
               else f"superseded: contract is at size {state.size}")
        return self._fail(a, why)

    def _send(self, contract: AnchorContract, a: Anchor) -> TickResult:
        done = self._reconcile(contract, a)
        if done is not None:
            return done
        nonce = self.chain.nonce("latest")
        if a.raw_tx is not None and a.nonce == nonce and a.tx_hashes:
            # Same nonce still free (reorg dropped it, or the node restarted): the same bytes again.
            self._save(a.id, state="sent", sent_at=self.clock.now())
            self.ensure_lease()
            self.chain.broadcast(a.raw_tx)
            return TickResult("rebroadcast", a.size)
        try:
            gas = int(self.chain.estimate_anchor_gas(contract.address, a.size, a.root, a.checkpoint_hash)
                      * self.policy.gas_margin)
        except AnchorTransactionReverted as exc:
            done = self._reconcile(contract, a)
            return done or self._fail(a, f"contract refuses: {exc.fields.get('reason', exc.detail)}")
        signed = self.chain.sign_anchor(contract.address, a.size, a.root, a.checkpoint_hash,
                                        nonce=nonce, fees=self.chain.fees(), gas=gas)
        self._write_ahead(a, signed.tx_hash, signed.raw, nonce, signed.fees, gas)
        self.ensure_lease()
        self.chain.broadcast(signed.raw)
        return TickResult("sent", a.size, signed.tx_hash.hex())

    def _check_sent(self, contract: AnchorContract, a: Anchor) -> TickResult:
        for h in reversed(a.tx_hashes):
            r = self.chain.receipt(bytes.fromhex(h))
            if r is None:
                continue
            if r.succeeded:
                return self._included(a, r)
            return self._reconcile(contract, a) or self._fail(a, "anchor transaction reverted")
        if a.raw_tx is None or a.tx_hash is None or a.nonce is None or not a.fees:
            return self._replan(a, "sent row without its signed transaction")
        account_nonce = self.chain.nonce("latest")
        if account_nonce > a.nonce:
            # Our nonce is used but none of our hashes has a receipt: let the contract decide.
            return self._reconcile(contract, a) or self._replan(a, "nonce consumed elsewhere")
        if account_nonce < a.nonce:
            # A nonce gap (a reorg or another sender dropped an earlier transaction): ours can
            # never be mined; sign it again at the account's nonce (the contract refuses the old
            # one should it ever be mined too: sizes only grow).
            return self._replan(a, f"nonce gap: the account is at nonce {account_nonce}, the transaction at {a.nonce}")
        if not self.chain.transaction_known(a.tx_hash):
            self.ensure_lease()
            self.chain.broadcast(a.raw_tx)
            self._save(a.id, attempts=a.attempts + 1)
            return TickResult("rebroadcast", a.size)
        waited = (self.clock.now() - (a.sent_at or a.updated_at)).total_seconds()
        if waited >= self.policy.bump_after_seconds and len(a.tx_hashes) <= self.policy.max_bumps:
            old = Fees.from_json(a.fees).bumped()
            net = self.chain.fees()
            fees = Fees(*(max(x, y) if x is not None and y is not None else x
                          for x, y in ((old.max_fee_per_gas, net.max_fee_per_gas),
                                       (old.max_priority_fee_per_gas, net.max_priority_fee_per_gas),
                                       (old.gas_price, net.gas_price))))
            signed = self.chain.sign_anchor(contract.address, a.size, a.root, a.checkpoint_hash,
                                            nonce=a.nonce, fees=fees, gas=a.gas_limit or 100_000)
            self._write_ahead(a, signed.tx_hash, signed.raw, a.nonce, fees, a.gas_limit or 100_000)
            self.ensure_lease()
            self.chain.broadcast(signed.raw)
            return TickResult("bumped", a.size, signed.tx_hash.hex())
        return TickResult("waiting", a.size, "sent, not mined yet")

    def _check_included(self, contract: AnchorContract, a: Anchor) -> TickResult:
        if a.block_number is None or a.block_hash is None or a.tx_hash is None:
            return self._replan(a, "included row without its block")
        canonical = self.chain.block_hash(a.block_number)
        receipt = self.chain.receipt(a.tx_hash)
        if (canonical is None or not hmac.compare_digest(canonical, a.block_hash) or receipt is None
                or receipt.block_hash != a.block_hash):
            return self._replan(a, f"reorg: block {a.block_number} replaced", reorg=True)
        head = self.chain.head()
        deep = head - a.block_number >= self._confirmations()
        if not deep and self.policy.use_finalized_tag:
            fin = self.chain.finalized_block()
            deep = fin is not None and fin >= a.block_number
        if not deep:
            return TickResult("waiting", a.size,
                              f"{head - a.block_number} of {self._confirmations()} confirmations")
        self._save(a.id, state="final", final_at=self.clock.now(), last_error=None)
        return TickResult("final", a.size)

    def _recheck_final(self, contract: AnchorContract, window: int = 16) -> TickResult | None:
        """A reorg deeper than the confirmations can take away a "final" anchor. Check the newest
        final anchors' blocks are still canonical; when some vanished, the newest goes back to
        planned (re-anchored next tick; its checkpoint covers the older ones) and the older ones
        are marked failed, so none of them is served as final while absent. (The embedded chain
        cannot reorg, but a block mined by a process that died before writing it is lost.)"""
        with self.db.read() as s:
            finals = list(s.scalars(select(Anchor).where(Anchor.contract_id == contract.id,
                                                         Anchor.state == "final")
                                    .order_by(Anchor.size.desc()).limit(window)))
        gone = []
        for a in finals:
            canonical = self.chain.block_hash(a.block_number) if a.block_number is not None else None
            if canonical is not None and a.block_hash is not None and hmac.compare_digest(canonical, a.block_hash):
                break  # blocks below a canonical one are canonical too
            gone.append(a)
        if not gone:
            return None
        newest, older = gone[0], gone[1:]
        for a in older:
            self._save(a.id, state="failed", final_at=None,
                       last_error=f"reorg: final block {a.block_number} replaced; covered by size {newest.size}")
        self._save(newest.id, final_at=None)
        log.error("final anchor vanished in a reorg deeper than the confirmations; re-anchoring",
                  extra={"size": newest.size, "block": newest.block_number, "vanished": len(gone)})
        return self._replan(newest, f"reorg: final block {newest.block_number} replaced", reorg=True)

    def _confirmations(self) -> int:
        # The embedded chain mines only on transactions and cannot reorg: depth means nothing there.
        return 0 if self.chain.embedded else self.policy.confirmations

    # --- writes ---------------------------------------------------------------------------------

    def _save(self, anchor_id: int, **values: object) -> None:
        with self.db.transaction() as s:
            self._fence(s)
            s.execute(update(Anchor).where(Anchor.id == anchor_id)
                      .values(updated_at=self.clock.now(), **values))

    def _write_ahead(self, a: Anchor, tx_hash: bytes, raw: bytes, nonce: int, fees: Fees, gas: int) -> None:
        """Record the signed transaction before it leaves: a crash after this line is recoverable."""
        hashes = [*a.tx_hashes, tx_hash.hex()]
        now = self.clock.now()
        self._save(a.id, state="sent", nonce=nonce, tx_hash=tx_hash, tx_hashes=hashes, raw_tx=raw,
                   fees=fees.to_json(), gas_limit=gas, attempts=a.attempts + 1, sent_at=now)

    def _included(self, a: Anchor, r: Receipt) -> TickResult:
        self._save(a.id, state="included", tx_hash=r.tx_hash, block_number=r.block_number,
                   block_hash=r.block_hash, gas_used=r.gas_used or a.gas_used,
                   included_at=self.clock.now(), last_error=None)
        log.info("anchor included", extra={"size": a.size, "block": r.block_number})
        return TickResult("included", a.size, f"block {r.block_number}")

    def _replan(self, a: Anchor, why: str, *, reorg: bool = False) -> TickResult:
        self._save(a.id, state="planned", block_number=None, block_hash=None, included_at=None,
                   last_error=why, reorgs=a.reorgs + (1 if reorg else 0))
        log.warning("anchor back to planned: %s", why, extra={"size": a.size})
        return TickResult("reorg" if reorg else "planned", a.size, why)

    def _fail(self, a: Anchor, why: str) -> TickResult:
        self._save(a.id, state="failed", last_error=why)
        log.error("anchor failed: %s", why, extra={"size": a.size})
        return TickResult("failed", a.size, why)

    def _record_error(self, exc: ChainError) -> None:
        try:
            with self.db.transaction() as s:
                a = s.scalars(select(Anchor).where(Anchor.state.in_(OPEN_STATES))
                              .order_by(Anchor.size)).first()
                if a is not None:
                    a.last_error = f"{exc.code}: {exc.detail}"[:500]
                    a.updated_at = self.clock.now()
        except Exception:  # recording the error must not mask it
            log.exception("could not record the anchor error")

    # --- loop -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, poll_seconds: float = 2.0, max_backoff: float = 60.0) -> None:
        """Tick until ``stop`` is set; back off exponentially while the chain is unreachable."""
        delay = poll_seconds
        while not stop.is_set():
            try:
                result = self.tick()
            except (OperationalError, InterfaceError, PoolTimeout) as exc:
                # the database is down or stalled: one line per attempt, backing off
                log.warning("anchor tick: database unavailable (%s)",
                            type(getattr(exc, "orig", None) or exc).__name__)
                result = TickResult("error", detail="database unavailable")
            except Exception:  # a database outage must not kill the background thread
                log.exception("anchor tick crashed")
                result = TickResult("error", detail="unexpected failure")
            if result.action == "error":
                # from poll_seconds up: after a tick that had more to do (delay 0) a doubled 0 would
                # retry a dead database or RPC in a tight loop, a log line each time
                delay = min(max_backoff, max(poll_seconds, delay * 2))
            else:
                delay = poll_seconds if result.action in ("idle", "waiting", "skipped", "locked") else 0.0
            stop.wait(delay)
