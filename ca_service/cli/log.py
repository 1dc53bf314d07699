"""``ca-service log verify|publish``: audit the transparency log, publish a checkpoint.

``verify`` re-reads the log from the database (default) or from a server's C2SP tiles
(``--server``), checks every leaf is a well-formed leaf, recomputes the root and compares it with
the latest signed checkpoint. With ``--trusted CHECKPOINT`` it starts from a checkpoint verified
earlier: the prefix's complete-subtree hashes are fetched, checked against the trusted root, and
only the newer entries are read. Each ``--consistent-with CHECKPOINT`` (one the user kept) must be
a prefix of the log: its root is recomputed on the way, or proved consistent with the trusted one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import click

from ca_service.cli.common import open_services
from ca_service.errors import CAServiceError, CheckpointInvalid, LogInconsistent
from ca_service.tlog import merkle
from ca_service.tlog.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from ca_service.tlog.leaves import decode_leaf
from ca_service.tlog.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileRef,
    decode_entry_bundle,
    split_hashes,
    tile_width,
)


class Source(Protocol):
    def note(self) -> str: ...
    def vkey(self) -> str: ...
    def tile(self, level: int, index: int, width: int) -> list[bytes]: ...
    def entries(self, index: int, width: int) -> list[bytes]: ...


class DbSource:
    def __init__(self) -> None:
        from ca_service.services import log as log_service

        self.svc = open_services()
        self._log = log_service

    def note(self) -> str:
        return self._log.get_checkpoint(self.svc).note

    def vkey(self) -> str:
        return self._log.vkey(self.svc)

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        data, _ = self._log.tile(self.svc, TileRef(level, index, width).path.removeprefix("tile/"))
        return split_hashes(data)

    def entries(self, index: int, width: int) -> list[bytes]:
        data, _ = self._log.tile(self.svc, TileRef(None, index, width).path.removeprefix("tile/"))
        return decode_entry_bundle(data)


class HttpSource:
    def __init__(self, base: str) -> None:
        import requests

        self.base = base.rstrip("/") + "/v1/log/"
        self.http = requests.Session()

    def _get(self, path: str) -> bytes:
        import requests

        try:
            r = self.http.get(self.base + path, timeout=30)
        except requests.RequestException as exc:
            raise LogInconsistent(f"cannot fetch {path} from the log server") from exc
        if r.status_code != 200:
            raise LogInconsistent(f"log server answered {r.status_code} for {path}")
        return r.content

    def note(self) -> str:
        return self._get("checkpoint").decode()

    def vkey(self) -> str:
        return self._get("vkey").decode().strip()

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        return split_hashes(self._get(TileRef(level, index, width).path))

    def entries(self, index: int, width: int) -> list[bytes]:
        return decode_entry_bundle(self._get(TileRef(None, index, width).path))


def _subtrees(source: Source, size: int) -> Callable[[int, int], bytes]:
    """:data:`merkle.SubtreeHashes` from a source's tiles at ``size`` (untrusted: callers check roots)."""
    cache: dict[tuple[int, int], list[bytes]] = {}

    def get(level: int, index: int) -> bytes:
        tl, sub = divmod(level, TILE_HEIGHT)
        first = index << sub
        key = (tl, first // TILE_WIDTH)
        if key not in cache:
            cache[key] = source.tile(tl, key[1], tile_width(tl, key[1], size))
        off = first % TILE_WIDTH
        return merkle.root_of_leaf_hashes(cache[key][off : off + (1 << sub)])

    return get


def _read_checkpoint(path: Path, verifier: NoteVerifier) -> Checkpoint:
    return open_checkpoint(path.read_text(), verifier)


def verify_log(
    source: Source, verifier: NoteVerifier, trusted: Checkpoint | None, kept: list[Checkpoint]
) -> dict[str, Any]:
    """The audit itself; raises a CAServiceError leaf at the first problem."""
    latest = open_checkpoint(source.note(), verifier)
    for cp in [trusted, *kept]:
        if cp is not None and cp.origin != latest.origin:
            raise CheckpointInvalid("a checkpoint given belongs to another log", origin=cp.origin)
        if cp is not None and cp.size > latest.size:
            raise LogInconsistent(
                "the log's latest checkpoint is smaller than one you kept (rollback?)",
                kept=cp.size,
                latest=latest.size,
            )
    start = trusted.size if trusted is not None else 0
    get = _subtrees(source, latest.size)
    # (1) the prefix: complete-subtree hashes of the trusted tree, checked against its root.
    frontier = [get(level, index) for level, index in merkle.complete_subtrees(start)]
    builder = merkle.TreeBuilder(start, frontier)
    if trusted is not None and builder.root() != trusted.root_hash:
        raise LogInconsistent("the log's stored hashes do not match the trusted checkpoint")
    # (2) checkpoints kept from before the trusted one: consistency proofs over the stored hashes.
    for cp in kept:
        if cp.size <= start and trusted is not None:
            proof = merkle.consistency_proof(cp.size, start, get)
            merkle.verify_consistency(cp.size, start, cp.root_hash, trusted.root_hash, proof)
    due = sorted({cp.size for cp in kept if cp.size > start})
    roots = {cp.size: cp.root_hash for cp in kept}
    # (3) every newer entry: well-formed leaf, appended to the tree; kept roots recomputed on the way.
    types: dict[str, int] = {}
    i = start
    while i < latest.size:
        bundle, off = i // TILE_WIDTH, i % TILE_WIDTH
        width = min(TILE_WIDTH, latest.size - bundle * TILE_WIDTH)
        leaves = source.entries(bundle, width)
        if len(leaves) != width:
            raise LogInconsistent("entry bundle has the wrong number of entries", bundle=bundle)
        for leaf in leaves[off:]:
            t = decode_leaf(leaf).type
            types[t] = types.get(t, 0) + 1
            builder.append(merkle.leaf_hash(leaf))
            while due and due[0] == builder.size:
                if builder.root() != roots[due.pop(0)]:
                    raise LogInconsistent(
                        "a checkpoint you kept is not a prefix of the log", size=builder.size
                    )
        i = bundle * TILE_WIDTH + width
    if builder.root() != latest.root_hash:
        raise LogInconsistent("recomputed root differs from the latest checkpoint", size=latest.size)
    return {
        "ok": True,
        "origin": latest.origin,
        "size": latest.size,
        "root": latest.root_hash.hex(),
        "from": start,
        "entries_read": latest.size - start,
        "leaf_types": types,
        "consistent_with": sorted(roots),
    }


@click.group("log")
def log() -> None:
    """Transparency log: verify, publish."""


@log.command("verify")
@click.option("--server", help="read the log over HTTP from this ca-service URL instead of the database")
@click.option(
    "--vkey", "vkey_text", help="the log's verifier key (name+id+key); default: the log's own (TOFU)"
)
@click.option(
    "--trusted",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a checkpoint verified before: only entries after it are re-read",
)
@click.option(
    "--consistent-with",
    "kept_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a checkpoint you kept: the log must extend it (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def verify(
    server: str | None,
    vkey_text: str | None,
    trusted: Path | None,
    kept_files: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Re-read the log, recompute its root and check it against signed checkpoints."""
    try:
        source: Source = HttpSource(server) if server else DbSource()
        if vkey_text is None:
            click.echo("warning: no --vkey given; trusting the log's own key", err=True)
        verifier = NoteVerifier.from_vkey(vkey_text or source.vkey())
        trusted_cp = _read_checkpoint(trusted, verifier) if trusted else None
        kept = [_read_checkpoint(p, verifier) for p in kept_files]
        report = verify_log(source, verifier, trusted_cp, kept)
    except CAServiceError as exc:
        report = {"ok": False, "error": {"code": exc.code, "detail": exc.detail}}
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    elif report["ok"]:
        click.echo(
            f"log OK: {report['origin']} size {report['size']} root {report['root']} "
            f"({report['entries_read']} entries re-read from index {report['from']}; "
            f"consistent with {len(report['consistent_with'])} kept checkpoint(s))"
        )
    else:
        click.echo(
            f"log verification FAILED [{report['error']['code']}]: {report['error']['detail']}", err=True
        )
    sys.exit(0 if report["ok"] else 1)


@log.command("publish")
def publish() -> None:
    """Publish one checkpoint now (if entries are pending) and print it."""
    from ca_service.services import log as log_service

    svc = open_services()
    try:
        cp = log_service.publish_checkpoint(svc)
    finally:
        svc.close()
    assert cp is not None  # wait=True always returns the latest checkpoint
    click.echo(cp.note, nl=False)
