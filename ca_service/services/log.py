"""Transparency log use cases: publish and read checkpoints, proofs, tiles, entries, bundles.

Appending is not here: it happens inside the caller's transaction (``tlog.sequencer.append_leaf``).
Publishing is a single-writer duty: a transaction-scoped PostgreSQL advisory lock (SQLite:
BEGIN IMMEDIATE) around read-latest / compute-root / check-consistency / insert, and the
checkpoint's size is its primary key, so two checkpoints can never disagree about a size, and a
new one is only written once its consistency with the previous one has been verified.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from ca_service.db.models.tlog import TlogCheckpoint, TlogEntry
from ca_service.errors import (
    ConfigurationError,
    ConsistencyProofInvalid,
    LogEntryNotFound,
    LogInconsistent,
    LogOriginMismatch,
    NotCheckpointed,
    NotInitialised,
    ProofUnavailable,
    TileNotFound,
)
from ca_service.services.container import Services
from ca_service.tlog import merkle
from ca_service.tlog.bundle import ProofBundle
from ca_service.tlog.checkpoint import Checkpoint, NoteSigner, NoteVerifier
from ca_service.tlog.store import TileStore, stored_size
from ca_service.tlog.tiles import TileRef, encode_entry_bundle, entries_width, parse_tile_path, tile_width

log = logging.getLogger(__name__)

PUBLISH_LOCK_KEY = 0x6361_7376_636B_7074  # "casvckpt"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@dataclass(frozen=True)
class PublishedCheckpoint:
    size: int
    root_hash: bytes
    note: str
    note_sha256: str
    created_at: datetime

    @classmethod
    def of(cls, row: TlogCheckpoint) -> PublishedCheckpoint:
        return cls(row.size, row.root_hash, row.note, row.note_sha256, row.created_at)


# --- keys -------------------------------------------------------------------------------------------


def log_signer(svc: Services) -> NoteSigner:
    key = svc.keys.private_key("log")
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("the log key must be Ed25519 (C2SP signed note)")
    return NoteSigner(svc.settings.log_origin, key)


def log_verifier(svc: Services) -> NoteVerifier:
    return NoteVerifier.from_public_key(svc.settings.log_origin, svc.keys.public_key("log"))


def vkey(svc: Services) -> str:
    """The C2SP verifier key string of the log."""
    return log_verifier(svc).vkey


# --- checkpoints ------------------------------------------------------------------------------------


def latest_checkpoint_row(session: Session) -> TlogCheckpoint | None:
    return session.scalars(select(TlogCheckpoint).order_by(TlogCheckpoint.size.desc()).limit(1)).first()


def _lock_publisher(session: Session, wait: bool) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite: the transaction holds the database write lock (BEGIN IMMEDIATE)
    if wait:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY})
        return True
    got: bool = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY}
    ).scalar_one()
    return got


def check_log_origin(svc: Services, session: Session | None = None) -> None:
    """The origin and key are one per log, stored with it: the published checkpoints carry the
    origin, and the log key is the database's active ``log`` key. A replica configured with
    another origin (``CA_SERVICE_LOG_ORIGIN``, or derived from ``CA_SERVICE_PUBLIC_URL``) must not
    sign checkpoints under it.

    Raises:
        LogOriginMismatch (``log.origin_mismatch``): the log's checkpoints use another origin.
    """
    if session is None:
        with svc.db.read() as s:
            return check_log_origin(svc, s)
    latest = latest_checkpoint_row(session)
    if latest is None:
        return
    origin = latest.note.split("\n", 1)[0]
    if origin != svc.settings.log_origin:
        raise LogOriginMismatch(
            f"the log's origin is {origin!r} but this replica's is {svc.settings.log_origin!r}: set "
            "CA_SERVICE_LOG_ORIGIN (or CA_SERVICE_PUBLIC_URL) to match the other replicas",
            log_origin=origin, configured=svc.settings.log_origin)


def publish_checkpoint(svc: Services, *, wait: bool = True) -> PublishedCheckpoint | None:
    """Sign and store a checkpoint for every committed entry, unless the latest already covers them.

    Returns the latest checkpoint after the call (``None`` when another publisher holds the lock
    and ``wait`` is false).

    Raises:
        LogInconsistent (``log.inconsistent``): the stored tree is not an extension of the
            latest checkpoint (entries lost or altered); nothing is published.
        NotInitialised (``ca.not_initialised``): no log key.
    """
    signer = log_signer(svc)
    with svc.db.transaction() as session:
        if not _lock_publisher(session, wait):
            return None
        check_log_origin(svc, session)
        latest = latest_checkpoint_row(session)
        size = stored_size(session)
        if latest is not None and size < latest.size:
            raise LogInconsistent("the log holds fewer entries than its latest checkpoint", size=size)
        if latest is not None and size == latest.size:
            return PublishedCheckpoint.of(latest)
        store = TileStore(session, size)
        root = store.root()
        if latest is not None:
            # Never publish a checkpoint that is not an extension of the previous one.
            try:
                merkle.verify_consistency(
                    latest.size, size, latest.root_hash, root, store.consistency_proof(latest.size)
                )
            except ConsistencyProofInvalid as exc:
                raise LogInconsistent("stored tree is inconsistent with the latest checkpoint") from exc
        note = signer.sign(Checkpoint(svc.settings.log_origin, size, root).body())
        row = TlogCheckpoint(
            size=size,
            root_hash=root,
            note=note,
            note_sha256=hashlib.sha256(note.encode()).hexdigest(),
            created_at=svc.clock.now(),
        )
        session.add(row)
        session.flush()
        log.info("published log checkpoint", extra={"size": size, "root": root.hex()})
        return PublishedCheckpoint.of(row)


def get_checkpoint(svc: Services) -> PublishedCheckpoint:
    """The latest checkpoint. Raises NotCheckpointed (``log.not_checkpointed``) before the first."""
    with svc.db.read() as session:
        row = latest_checkpoint_row(session)
        if row is None:
            raise NotCheckpointed("the log has not published a checkpoint yet")
        return PublishedCheckpoint.of(row)


# --- proofs -----------------------------------------------------------------------------------------


def _current_size(session: Session, size: int) -> None:
    tree = stored_size(session)
    if size > tree:
        raise ProofUnavailable("size is larger than the log", size=size, tree_size=tree)


def inclusion_proof(svc: Services, index: int, size: int) -> dict[str, Any]:
    """``{"index", "size", "leaf_hash", "hashes"}`` (base64, RFC 9162 order).

    Raises:
        ProofUnavailable (``log.proof_unavailable``): ``not 0 <= index < size <= tree size``.
    """
    if not 0 <= index < size:
        raise ProofUnavailable("need 0 <= index < size", index=index, size=size)
    with svc.db.read() as session:
        _current_size(session, size)
        store = TileStore(session, size)
        hashes = store.inclusion_proof(index)
        leaf = store.leaf_hash(index)
    return {"index": index, "size": size, "leaf_hash": _b64(leaf), "hashes": [_b64(h) for h in hashes]}


def consistency_proof(svc: Services, old_size: int, new_size: int) -> dict[str, Any]:
    """``{"from", "to", "hashes"}``.

    Raises:
        ProofUnavailable (``log.proof_unavailable``): ``not 0 <= from <= to <= tree size``.
    """
    if not 0 <= old_size <= new_size:
        raise ProofUnavailable("need 0 <= from <= to", **{"from": old_size, "to": new_size})
    with svc.db.read() as session:
        _current_size(session, new_size)
        hashes = TileStore(session, new_size).consistency_proof(old_size)
    return {"from": old_size, "to": new_size, "hashes": [_b64(h) for h in hashes]}


def proof_bundle_for_index(svc: Services, index: int, size: int | None = None) -> str:
    """``c2sp.org/tlog-proof@v1`` text for entry ``index`` under the latest checkpoint, or under the
    published checkpoint of ``size`` (an anchored size, so a relying party can check the entry
    against the chain anchor that covers it).

    Raises:
        LogEntryNotFound (``log.entry_not_found``): negative index.
        NotCheckpointed (``log.not_checkpointed``): no checkpoint covers the entry yet, or none
            was published at ``size``.
        ProofUnavailable (``log.proof_unavailable``): ``size`` does not contain the entry.
    """
    if index < 0:
        raise LogEntryNotFound("negative log index", index=index)
    with svc.db.read() as session:
        if size is None:
            row = latest_checkpoint_row(session)
        else:
            if size <= index:
                raise ProofUnavailable("a tree of this size does not contain the entry", index=index, size=size)
            row = session.get(TlogCheckpoint, size)
            if row is None:
                raise NotCheckpointed("no checkpoint of this size was published (anchored sizes are; see "
                                      "GET /v1/anchors)", index=index, size=size)
        if row is None or row.size <= index:
            raise NotCheckpointed("no checkpoint covers this entry yet; retry shortly", index=index)
        hashes = TileStore(session, row.size).inclusion_proof(index)
        # The leaf rides in the bundle's `extra` line, so a relying party can check offline that
        # the logged leaf names this certificate (its SHA-256) and that it is under the root.
        leaf = session.get(TlogEntry, index)
        extra = bytes(leaf.leaf) if leaf is not None else None
        return ProofBundle(index=index, hashes=tuple(hashes), checkpoint_note=row.note, extra=extra).text()


# --- tiles and entries ------------------------------------------------------------------------------


def tile(svc: Services, path: str) -> tuple[bytes, TileRef]:
    """Bytes of a C2SP tile or entry bundle at ``path`` (after ``tile/``).

    Raises:
        TilePathInvalid (``log.tile_path_invalid``): not a canonical path.
        TileNotFound (``log.tile_not_found``): the log is not that large yet.
    """
    ref = parse_tile_path(path)
    with svc.db.read() as session:
        size = stored_size(session)
        if ref.level is None:
            if entries_width(ref.index, size) < ref.width:
                raise TileNotFound("the log has not reached this entry bundle", path=ref.path)
            lo = ref.index * 256
            leaves = session.scalars(
                select(TlogEntry.leaf)
                .where(TlogEntry.idx >= lo, TlogEntry.idx < lo + ref.width)
                .order_by(TlogEntry.idx)
            )
            return encode_entry_bundle(list(leaves)), ref
        if tile_width(ref.level, ref.index, size) < ref.width:
            raise TileNotFound("the log has not reached this tile", path=ref.path)
        hashes = TileStore(session, size).tile(ref.level, ref.index)[: ref.width]
        return b"".join(hashes), ref


def entry(svc: Services, index: int) -> dict[str, Any]:
    """``{"index", "leaf_hash", "leaf"}`` (base64) of one entry.

    Raises:
        LogEntryNotFound (``log.entry_not_found``).
    """
    with svc.db.read() as session:
        row = session.get(TlogEntry, index) if index >= 0 else None
        if row is None:
            raise LogEntryNotFound("no log entry at this index", index=index)
        return {"index": index, "leaf_hash": _b64(row.leaf_hash), "leaf": _b64(row.leaf)}


# --- background publisher ---------------------------------------------------------------------------


def run_publisher(
    svc: Services, stop: threading.Event, *, interval: float = 5.0, batch: int = 256, poll: float = 0.5
) -> None:
    """Publish a checkpoint every ``interval`` seconds, or as soon as ``batch`` entries wait.

    Safe to run in every replica: the publish lock makes one of them do the work. Returns when
    ``stop`` is set. Errors are logged and retried (a chain of failures must not kill ``serve``).
    """
    last = 0.0
    delay = poll
    while not stop.is_set():
        try:
            with svc.db.read() as session:
                size = stored_size(session)
                latest = latest_checkpoint_row(session)
            pending = size - (latest.size if latest is not None else -1)
            due = time.monotonic() - last >= interval
            if pending > 0 and (due or pending >= batch):
                publish_checkpoint(svc, wait=False)
                last = time.monotonic()
            delay = poll
        except NotInitialised:
            log.warning("log publisher waiting: no log key yet")
        except LogOriginMismatch as exc:
            delay = 60.0
            log.error("log publisher stopped signing: %s", exc.detail, extra={"code": exc.code})
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            # the database is down or stalled: one line, then back off (no traceback flood)
            delay = min(30.0, max(poll, delay * 2))
            log.warning("log publisher: database unavailable (%s); retrying in %.0f s",
                        type(getattr(exc, "orig", None) or exc).__name__, delay)
        except Exception:
            log.exception("log publisher iteration failed; retrying")
        stop.wait(delay)


def start_publisher(svc: Services, **kwargs: Any) -> tuple[threading.Thread, threading.Event]:
    """Run :func:`run_publisher` in a daemon thread (for ``serve``); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_publisher, args=(svc, stop), kwargs=kwargs, name="tlog-publisher", daemon=True
    )
    thread.start()
    return thread, stop
