"""C2SP tlog-tiles paths, tile widths and entry bundles (PURE: no IO).

A tile at level ``L``, index ``N`` holds up to 256 hashes of the complete subtrees of height
``8 * L`` numbered ``256 * N ...`` (level 0: leaf hashes). A partial tile ``N.p/W`` holds the first
``W`` (1..255) of them. ``N`` is written in zero-padded groups of three digits, every group but the
last prefixed with ``x``: ``1234067`` -> ``x001/x234/067``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ca_service.errors import TilePathInvalid

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF

_GROUP = re.compile(r"x[0-9]{3}")  # [0-9], not \d: that takes other scripts' digits (a second path)
_LAST = re.compile(r"[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


@dataclass(frozen=True)
class TileRef:
    """One tile: ``level`` is ``None`` for an entry bundle; ``width`` is 256 for a full tile."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.level is not None and not 0 <= self.level <= MAX_LEVEL:
            raise TilePathInvalid("tile level out of range", level=self.level)
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise TilePathInvalid("tile index or width out of range")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """The path under the log prefix, e.g. ``tile/0/x001/234.p/7``."""
        head = "entries" if self.level is None else str(self.level)
        tail = "" if self.full else f".p/{self.width}"
        return f"tile/{head}/{encode_index(self.index)}{tail}"


def encode_index(n: int) -> str:
    """C2SP tlog-tiles index encoding: ``1234067`` -> ``x001/x234/067``."""
    if n < 0:
        raise TilePathInvalid("negative tile index")
    groups: list[str] = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def parse_tile_path(path: str) -> TileRef:
    """Parse ``<L>/<N>[.p/<W>]`` or ``entries/<N>[.p/<W>]`` (the part after ``tile/``).

    Only the canonical encoding is accepted, so each tile has exactly one path.

    Raises:
        TilePathInvalid (``log.tile_path_invalid``): anything else.
    """
    parts = path.split("/")
    if len(parts) < 2:
        raise TilePathInvalid("tile path too short")
    head, rest = parts[0], parts[1:]
    level: int | None
    if head == "entries":
        level = None
    elif _LEVEL.fullmatch(head):
        level = int(head)
    else:
        raise TilePathInvalid("tile level is not a decimal 0..63")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= TILE_WIDTH:
            raise TilePathInvalid("partial tile width must be 1..255")
        width = int(rest[-1])
        rest = rest[:-2] + [rest[-2][:-2]]
    if len(rest) > 7 or not _LAST.fullmatch(rest[-1]) or not all(_GROUP.fullmatch(g) for g in rest[:-1]):
        raise TilePathInvalid("tile index is not in x000/000 form")
    digits = "".join(g.lstrip("x") for g in rest)
    if len(rest) > 1 and rest[0] == "x000":
        raise TilePathInvalid("tile index has a leading zero group")
    return TileRef(level=level, index=int(digits), width=width)


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes tile ``(level, index)`` holds in a tree of ``size`` leaves (0..256)."""
    complete = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, complete - index * TILE_WIDTH))


def entries_width(index: int, size: int) -> int:
    """How many entries the bundle ``index`` holds in a tree of ``size`` leaves (0..256)."""
    return max(0, min(TILE_WIDTH, size - index * TILE_WIDTH))


def split_hashes(data: bytes) -> list[bytes]:
    """Split concatenated 32-byte hashes (a tile body)."""
    if len(data) % 32:
        raise TilePathInvalid("tile data is not a whole number of hashes")
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """C2SP tlog-tiles entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_SIZE:
            raise TilePathInvalid("entry too large for a bundle")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Inverse of :func:`encode_entry_bundle`.

    Raises:
        TilePathInvalid (``log.tile_path_invalid``): truncated bundle.
    """
    out: list[bytes] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise TilePathInvalid("truncated entry bundle")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise TilePathInvalid("truncated entry bundle")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out
