"""Read side of the stored tree: complete-subtree hashes from tiles, O(log n) reads per proof.

A hash at tree level ``h`` (a complete subtree of ``2**h`` leaves) lives in a tile of level
``h // 8``, as the root of ``2**(h % 8)`` consecutive hashes of that tile. Level 0 tiles that are
not full yet are read from the entries table; tiles of level >= 1 are stored as they grow. Each
proof touches at most a couple of tiles per tile level (3 levels at 16M leaves), and tiles read
once are cached for the life of the store object (one request).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca_service.db.models.tlog import TlogEntry, TlogTile
from ca_service.errors import LogInconsistent, ProofUnavailable
from ca_service.tlog import merkle
from ca_service.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, split_hashes, tile_width


def stored_size(session: Session) -> int:
    """How many entries are committed (entries are dense, so ``max(idx) + 1``)."""
    n = session.scalar(select(func.max(TlogEntry.idx)))
    return 0 if n is None else int(n) + 1


class TileStore:
    """Subtree hashes of the tree of ``size`` leaves, from the database, cached per tile."""

    def __init__(self, session: Session, size: int) -> None:
        self.session = session
        self.size = size
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self.reads = 0

    def tile(self, level: int, index: int) -> list[bytes]:
        """The hashes of tile ``(level, index)`` at this tree size (may be partial or empty)."""
        key = (level, index)
        hit = self._tiles.get(key)
        if hit is not None:
            return hit
        width = tile_width(level, index, self.size)
        hashes: list[bytes]
        if width == 0:
            hashes = []
        elif level == 0 and width < TILE_WIDTH:
            self.reads += 1
            lo = index * TILE_WIDTH
            hashes = list(
                self.session.scalars(
                    select(TlogEntry.leaf_hash)
                    .where(TlogEntry.idx >= lo, TlogEntry.idx < lo + width)
                    .order_by(TlogEntry.idx)
                )
            )
        else:
            self.reads += 1
            data = self.session.scalar(
                select(TlogTile.hashes).where(TlogTile.level == level, TlogTile.idx == index)
            )
            hashes = split_hashes(data or b"")[:width]
        if len(hashes) != width:
            raise LogInconsistent("stored tile is shorter than the size implies", level=level, tile=index)
        self._tiles[key] = hashes
        return hashes

    def subtree(self, level: int, index: int) -> bytes:
        """:data:`merkle.SubtreeHashes` over the stored tiles."""
        if (index + 1) << level > self.size:
            raise ProofUnavailable("subtree is not complete at this size", level=level, index=index)
        tile_level, sub = divmod(level, TILE_HEIGHT)
        first = index << sub  # position among the hashes of height 8 * tile_level
        hashes = self.tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        return merkle.root_of_leaf_hashes(hashes[offset : offset + (1 << sub)])

    def root(self) -> bytes:
        return merkle.tree_hash(self.size, self.subtree)

    def inclusion_proof(self, index: int) -> list[bytes]:
        return merkle.inclusion_proof(index, self.size, self.subtree)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        return merkle.consistency_proof(old_size, self.size, self.subtree)

    def leaf_hash(self, index: int) -> bytes:
        return self.subtree(0, index)
