"""The read side's confirmation that final anchors are on the chain now.

A reorg deeper than the confirmation count can take a ``final`` anchor off the chain; the worker
sees it on its next tick and anchors the checkpoint again, but until then the row still says
``final``. So the API, the proof route and the explorer never serve a row's ``final`` as such: they
ask the chain (one ``eth_getBlockByNumber`` per contract, cached ``CA_SERVICE_ANCHOR_CONFIRM_TTL_SECONDS``,
default 2 s) whether the newest final anchor's block is still canonical. When it is, so is every
older final anchor of the contract: anchors are sequential (one open at a time), so an older one is
in an ancestor block, and a reorg that replaced it replaced every later block too. When it is not,
the newer final anchors are checked down to the first one still present (at most ``window``); the
ones above it, or all of them when the chain cannot be asked, are served as ``unconfirmed`` with
when the chain last showed them and why.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ca_service.anchor.chain import ChainClient
from ca_service.clock import Clock
from ca_service.db.models.anchor import Anchor, AnchorContract
from ca_service.errors import CAServiceError

WINDOW = 16


@dataclass(frozen=True)
class Confirmation:
    """What the chain showed of one contract's final anchors at ``checked`` (monotonic seconds)."""

    size: int | None                 # the largest final size whose block is canonical (None: none)
    at: datetime | None              # when the chain showed it (this check)
    detail: str                      # why the anchors above ``size`` are not confirmed
    checked: float
    seen: tuple[int, datetime] | None = None  # the largest size the chain ever showed, and when

    def covers(self, anchor: Anchor) -> bool:
        return self.size is not None and anchor.size <= self.size

    def confirmed_at(self, anchor: Anchor) -> datetime | None:
        """When the chain last showed ``anchor`` present (None: never, to this process)."""
        if self.covers(anchor):
            return self.at
        return self.seen[1] if self.seen is not None and self.seen[0] >= anchor.size else None


class AnchorConfirmer:
    """Per process: the chain's answer about each contract's newest final anchor, for ``ttl`` seconds."""

    def __init__(self, reader: Callable[[], ChainClient | None], clock: Clock, ttl_seconds: float,
                 window: int = WINDOW) -> None:
        self._reader = reader
        self._chain: ChainClient | None = None
        self._clock = clock
        self._ttl = ttl_seconds
        self._window = window
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[tuple[int, bytes], Confirmation]] = {}
        self._last_seen: dict[int, tuple[int, datetime]] = {}  # contract -> (size, when)

    def confirm(self, contract: AnchorContract, finals: Sequence[Anchor]) -> Confirmation:
        """``finals``: the contract's newest final anchors, newest first (at most ``window`` are used)."""
        if not finals:
            return Confirmation(None, None, "", time.monotonic())
        newest = finals[0]
        key = (newest.id, bytes(newest.block_hash or b""))
        with self._lock:  # one chain question at a time; concurrent readers take its answer
            hit = self._cache.get(contract.id)
            if hit is not None and hit[0] == key and time.monotonic() - hit[1].checked < self._ttl:
                return hit[1]
            conf = self._check(contract, finals[: self._window])
            self._cache[contract.id] = (key, conf)
            return conf

    def _check(self, contract: AnchorContract, finals: Sequence[Anchor]) -> Confirmation:
        newest = finals[0]
        seen = self._last_seen.get(contract.id)

        def unconfirmed(why: str) -> Confirmation:
            return Confirmation(None, None, why, time.monotonic(), seen)

        try:
            chain = self._chain or self._reader()
            if chain is None:
                return unconfirmed("the embedded chain it was anchored on is gone (not in CA_SERVICE_HOME)")
            self._chain = chain
            if chain.chain_id != contract.chain_id:
                return unconfirmed(f"the contract is on chain {contract.chain_id}, the configured chain is "
                                   f"{chain.chain_id}")
            for a in finals:
                if a.block_number is None or a.block_hash is None:
                    continue
                canonical = chain.block_hash(a.block_number)
                if canonical is not None and hmac.compare_digest(canonical, bytes(a.block_hash)):
                    now = self._clock.now()
                    if seen is None or a.size >= seen[0]:
                        self._last_seen[contract.id] = (a.size, now)
                    detail = "" if a is newest else (f"block {newest.block_number} is not on the chain now (a reorg); "
                                                     "the worker anchors it again")
                    return Confirmation(a.size, now, detail, time.monotonic(), seen)
        except CAServiceError as exc:  # ChainError leaves, config errors: not confirmed, say why
            return unconfirmed(f"the chain could not be asked ([{exc.code}] {exc.detail})")
        return unconfirmed(f"block {newest.block_number} is not on the chain now (a reorg); the worker anchors "
                           "it again")
