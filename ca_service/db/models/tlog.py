"""Transparency log tables: entries, stored tile hashes, signed checkpoints.

``tlog_entries`` holds every leaf at a dense index (0, 1, 2, ... with no gaps, see
``tlog/sequencer.py``). ``tlog_tiles`` holds C2SP tlog-tiles hash tiles: level 0 tiles are written
once they are full (256 leaf hashes); tiles of level >= 1 grow by one hash each time a tile of the
level below completes, so every complete-subtree hash a proof needs is one row read away.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db.base import Base, UTCDateTime


class TlogEntry(Base):
    __tablename__ = "tlog_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class TlogTile(Base):
    """Concatenated 32-byte hashes of one tile; full when it holds 256 of them (immutable then)."""

    __tablename__ = "tlog_tiles"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


class TlogCheckpoint(Base):
    """A published checkpoint (C2SP signed note); one per size, sizes only grow."""

    __tablename__ = "tlog_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    note_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
