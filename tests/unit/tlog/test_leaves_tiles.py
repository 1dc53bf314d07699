"""Leaf encoding and C2SP tlog-tiles path arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca_service.errors import LeafInvalid, TilePathInvalid
from ca_service.tlog import leaves, tiles

AT = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
D = "ab" * 32


def test_issuance_leaf_canonical() -> None:
    raw = leaves.issuance_leaf(
        at=AT.astimezone(timezone(timedelta(hours=2))),
        serial="1f",
        certificate_sha256=D,
        spki_sha256=D,
        evidence=[("tdx-quote", D)],
        collateral_sha256=["cd" * 32, D],
        policy_name="training-cvm",
        policy_version=3,
        policy_digest=D,
        appraisal_status="affirming",
    )
    assert raw.startswith(b'{"body":{"appraisal":"affirming","certificate_sha256":')
    assert raw.endswith(b'"time":"2026-01-02T03:04:05Z","type":"issuance","v":1}')
    leaf = leaves.decode_leaf(raw)
    assert leaf.type == "issuance" and leaf.body["collateral_sha256"] == [D, "cd" * 32]
    assert leaf.body["policy"] == {"name": "training-cvm", "version": 3, "digest": D}


def test_other_leaves_and_refusals() -> None:
    for raw in (
        leaves.revocation_leaf(at=AT, serial="01", reason="keyCompromise"),
        leaves.policy_leaf(at=AT, action="activate", name="p", version=1, digest=D, actor="admin"),
        leaves.integrity_report_leaf(
            at=AT, report_sha256=D, loader_serial="aa", order_id="o-1", components_sha256=D
        ),
    ):
        leaves.decode_leaf(raw)
    with pytest.raises(LeafInvalid):
        leaves.revocation_leaf(at=AT.replace(tzinfo=None), serial="01", reason="x")
    with pytest.raises(LeafInvalid):
        leaves.policy_leaf(at=AT, action="activate", name="p", version=1, digest=D.upper(), actor="admin")
    with pytest.raises(LeafInvalid):
        leaves.decode_leaf(b'{"v":1, "type":"revocation","time":"2026-01-02T03:04:05Z","body":{}}')
    with pytest.raises(LeafInvalid):
        leaves.decode_leaf(b'{"body":{},"time":"2026-01-02T03:04:05Z","type":"other","v":1}')


@pytest.mark.parametrize(
    ("n", "path"), [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")]
)
def test_index_encoding(n: int, path: str) -> None:
    assert tiles.encode_index(n) == path
    assert tiles.parse_tile_path(f"0/{path}") == tiles.TileRef(0, n)


def test_paths() -> None:
    assert tiles.parse_tile_path("1/x001/234.p/7") == tiles.TileRef(1, 1234, 7)
    assert tiles.parse_tile_path("entries/x001/234.p/255").path == "tile/entries/x001/234.p/255"
    assert tiles.TileRef(2, 5).path == "tile/2/005"


@pytest.mark.parametrize(
    "bad",
    ["", "0", "0/1", "0/0001", "0/x000/001", "0/001/002", "00/001", "64/001", "0/001.p/0", "0/001.p/256",
     "0/001.p/07", "0/001.p", "x/001", "0/x1/001", "0/001/", "0/../001", "entries/001.p/", "-1/001"],
)
def test_bad_paths(bad: str) -> None:
    with pytest.raises(TilePathInvalid):
        tiles.parse_tile_path(bad)


@given(st.integers(0, 10**15), st.one_of(st.none(), st.integers(0, 63)), st.integers(1, 256))
def test_path_round_trip(n: int, level: int | None, width: int) -> None:
    ref = tiles.TileRef(level, n, width)
    assert tiles.parse_tile_path(ref.path.removeprefix("tile/")) == ref


def test_widths_and_bundles() -> None:
    assert tiles.tile_width(0, 0, 300) == 256 and tiles.tile_width(0, 1, 300) == 44
    assert tiles.tile_width(1, 0, 300) == 1 and tiles.tile_width(1, 0, 255) == 0
    assert tiles.entries_width(1, 300) == 44
    data = tiles.encode_entry_bundle([b"a", b"", b"xyz" * 100])
    assert tiles.decode_entry_bundle(data) == [b"a", b"", b"xyz" * 100]
    with pytest.raises(TilePathInvalid):
        tiles.decode_entry_bundle(data[:-1])
