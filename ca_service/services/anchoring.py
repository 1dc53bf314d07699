"""Anchoring use cases: the worker wired to settings, and the read side for the API and proofs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select

from ca_service.anchor.chain import EMBEDDED, ChainClient, client_for, existing_embedded_chain
from ca_service.anchor.worker import AnchorPolicy, AnchorWorker, Checkpoint, CheckpointSource
from ca_service.config import Settings
from ca_service.db.models.anchor import Anchor, AnchorContract
from ca_service.db.models.tlog import TlogCheckpoint
from ca_service.db.session import Database
from ca_service.errors import AnchorNotFound, ChainError, RequestError
from ca_service.services.anchor_confirm import WINDOW, AnchorConfirmer, Confirmation
from ca_service.services.container import Services

READ_TIMEOUT_SECONDS = 3.0


class DbCheckpointSource:
    """The newest checkpoint the transparency log published (``tlog_checkpoints``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def newest(self) -> Checkpoint | None:
        with self.db.read() as s:
            row = s.scalars(select(TlogCheckpoint).order_by(TlogCheckpoint.size.desc()).limit(1)).first()
        if row is None:
            return None
        return Checkpoint(size=row.size, root=bytes(row.root_hash), note=row.note.encode("utf-8"))


@dataclass(frozen=True)
class AnchorView:
    """What relying parties get: enough to find and check the anchor on chain themselves.

    ``state`` is the row's, except that a final anchor the chain has not shown present within the
    confirmation TTL is ``unconfirmed`` (``detail`` says why; ``confirmed_at`` when it last was).
    """

    chain_id: int
    contract: str
    tx_hash: str | None
    block_number: int | None
    size: int
    root: str
    checkpoint_hash: str
    state: str
    confirmed_at: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "contract": self.contract, "tx_hash": self.tx_hash,
                "block_number": self.block_number, "size": self.size, "root": self.root,
                "checkpoint_hash": self.checkpoint_hash, "state": self.state,
                "confirmed_at": self.confirmed_at, "detail": self.detail}


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + bytes(b).hex()


def _view(a: Anchor, c: AnchorContract, conf: Confirmation | None = None) -> AnchorView:
    state, at, detail = a.state, None, None
    if a.state == "final":
        if conf is not None and conf.covers(a):
            at = conf.confirmed_at(a)
        else:
            state = "unconfirmed"
            at = conf.confirmed_at(a) if conf is not None else None
            detail = conf.detail if conf is not None else "not checked on the chain"
    return AnchorView(chain_id=c.chain_id, contract=c.address, tx_hash=_hex(a.tx_hash),
                      block_number=a.block_number, size=a.size, root="0x" + bytes(a.root).hex(),
                      checkpoint_hash="0x" + bytes(a.checkpoint_hash).hex(), state=state,
                      confirmed_at=at.isoformat().replace("+00:00", "Z") if at is not None else None,
                      detail=detail or (a.last_error if a.state == "failed" else None))


def policy_from_settings(services: Services, **overrides: Any) -> AnchorPolicy:
    base: dict[str, Any] = {"confirmations": services.settings.anchor_confirmations,
                            "interval_seconds": services.settings.anchor_interval_seconds,
                            "max_leaves": services.settings.anchor_max_leaves,
                            "lease_seconds": services.settings.anchor_lease_seconds}
    base.update(overrides)
    return AnchorPolicy(**base)


def chain_for(services: Services) -> ChainClient:
    """The configured chain (the process-wide instance for ``embedded``).

    Raises:
        ConfigurationError (``config.invalid``): RPC URL without a publisher key.
    """
    s = services.settings
    return client_for(s.chain_rpc, private_key=s.chain_private_key, chain_id=s.chain_id, home=s.home)


def make_worker(services: Services, *, chain: ChainClient | None = None,
                source: CheckpointSource | None = None, policy: AnchorPolicy | None = None) -> AnchorWorker:
    return AnchorWorker(services.db, chain or chain_for(services), source or DbCheckpointSource(services.db),
                        services.clock, policy or policy_from_settings(services))


# --- read side (API, proof bundles) -------------------------------------------------------------------


def chain_reader(settings: Settings) -> Callable[[], ChainClient | None]:
    """How the read side reaches the configured chain: a read-only RPC client with a short timeout
    (an API request must not hang on a black-holed node), or a reader of the embedded chain kept in
    CA_SERVICE_HOME (None when it is gone)."""
    def make() -> ChainClient | None:
        if settings.chain_rpc == EMBEDDED:
            return existing_embedded_chain(settings.home)
        return ChainClient.reader(settings.chain_rpc, chain_id=settings.chain_id, timeout=READ_TIMEOUT_SECONDS)

    return make


def confirmer(services: Services) -> AnchorConfirmer:
    """The process's AnchorConfirmer (made on first use)."""
    if services.anchor_confirmer is None:
        services.anchor_confirmer = AnchorConfirmer(chain_reader(services.settings), services.clock,
                                                    services.settings.anchor_confirm_ttl_seconds)
    return cast(AnchorConfirmer, services.anchor_confirmer)


def _confirmations(services: Services, contracts: dict[int, AnchorContract]) -> dict[int, Confirmation]:
    out = {}
    for cid, c in contracts.items():
        with services.db.read() as s:
            finals = list(s.scalars(select(Anchor).where(Anchor.contract_id == cid, Anchor.state == "final")
                                    .order_by(Anchor.size.desc()).limit(WINDOW)))
        out[cid] = confirmer(services).confirm(c, finals)
    return out


def _views(services: Services, rows: list[tuple[Anchor, AnchorContract]]) -> list[AnchorView]:
    final_contracts = {c.id: c for a, c in rows if a.state == "final"}
    confs = _confirmations(services, final_contracts)
    return [_view(a, c, confs.get(c.id)) for a, c in rows]


def list_anchors(services: Services, *, limit: int = 100, before_size: int | None = None) -> list[AnchorView]:
    """Anchors of the active contracts, newest first (every state; ``state`` says which)."""
    if not 1 <= limit <= 1000:
        raise RequestError("limit must be 1..1000")
    q = (select(Anchor, AnchorContract).join(AnchorContract, Anchor.contract_id == AnchorContract.id)
         .where(AnchorContract.retired_at.is_(None)).order_by(Anchor.size.desc()).limit(limit))
    if before_size is not None:
        q = q.where(Anchor.size < before_size)
    with services.db.read() as s:
        rows = [(a, c) for a, c in s.execute(q).all()]
    return _views(services, rows)


def latest_anchor(services: Services) -> AnchorView:
    """The newest final anchor the chain shows present; when none is confirmed, the newest final
    row, as ``unconfirmed``.

    Raises:
        AnchorNotFound (``anchor.not_found``): nothing final yet.
    """
    q = (select(Anchor, AnchorContract).join(AnchorContract, Anchor.contract_id == AnchorContract.id)
         .where(AnchorContract.retired_at.is_(None), Anchor.state == "final")
         .order_by(Anchor.size.desc()).limit(1))
    with services.db.read() as s:
        row = s.execute(q).first()
    if row is None:
        raise AnchorNotFound("no final anchor yet")
    a, c = row[0], row[1]
    conf = _confirmations(services, {c.id: c})[c.id]
    if conf.size is not None and conf.size != a.size:  # the newest went with a reorg: the newest present
        with services.db.read() as s:
            a = s.scalars(select(Anchor).where(Anchor.contract_id == c.id, Anchor.state == "final",
                                               Anchor.size == conf.size)).one()
    return _view(a, c, conf)


def anchor_covering(services: Services, index: int) -> AnchorView | None:
    """The smallest final anchor whose tree contains leaf ``index`` (size > index), or None;
    ``unconfirmed`` when the chain does not show it present now.

    For the certificate proof route: the inclusion proof to that anchor's size plus this anchor
    let a relying party check the entry against the chain.
    """
    if index < 0:
        raise RequestError("log index must be non-negative")
    q = (select(Anchor, AnchorContract).join(AnchorContract, Anchor.contract_id == AnchorContract.id)
         .where(AnchorContract.retired_at.is_(None), Anchor.state == "final", Anchor.size > index)
         .order_by(Anchor.size).limit(1))
    with services.db.read() as s:
        row = s.execute(q).first()
    return None if row is None else _views(services, [(row[0], row[1])])[0]


def require_anchor_covering(services: Services, index: int) -> AnchorView:
    """Raises AnchorNotFound (``anchor.not_found``) when no final anchor covers ``index`` yet."""
    view = anchor_covering(services, index)
    if view is None:
        raise AnchorNotFound("no final anchor covers this log entry yet", index=index)
    return view


# --- one-shot (demo, `anchor --once`) -----------------------------------------------------------------

TERMINAL = ("idle", "skipped", "waiting", "locked", "error", "final", "failed")


def anchor_now(services: Services, *, chain: ChainClient | None = None, max_steps: int = 12) -> AnchorView:
    """Anchor the newest checkpoint now (deploying if needed) and return the newest final anchor.

    For the demo on the embedded chain (final at inclusion). On a real chain with confirmations
    this returns the previous final anchor until enough blocks are on top; run the worker instead.

    Raises:
        ChainError leaves (``anchor.*``); AnchorNotFound (``anchor.not_found``) if nothing is final.
    """
    worker = make_worker(services, chain=chain,
                         policy=policy_from_settings(services, interval_seconds=0, max_leaves=1))
    for _ in range(max_steps):
        r = worker.tick()
        if r.action == "error":
            raise ChainError(r.detail)
        if r.action in TERMINAL and r.action != "final":
            break
    return latest_anchor(services)


def anchor_matches_chain(chain: ChainClient, view: AnchorView) -> bool:
    """A relying party's check: the chain's Anchored event for ``view.size`` has this root and
    checkpoint hash, in this transaction, under the chain id and contract the view names."""
    if chain.chain_id != view.chain_id or view.tx_hash is None:
        return False
    ev = chain.find_anchor_event(view.contract, view.size)
    return (ev is not None and "0x" + ev.root.hex() == view.root
            and "0x" + ev.checkpoint_hash.hex() == view.checkpoint_hash
            and "0x" + ev.tx_hash.hex() == view.tx_hash and ev.block_number == view.block_number)
