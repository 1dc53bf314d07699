"""Offline bundle parsing: shape only (items are verified on import, see tests/integration)."""

from __future__ import annotations

import json

import pytest

from ca_service.collateral.errors import BundleInvalid
from ca_service.collateral.fetchers import dump_bundle, load_bundle

GOOD = {"url": "https://kdsintf.amd.com/vcek/v1/Milan/crl", "status": 200, "headers": {"A": "b"},
        "body_b64": "AAE=", "fetched_at": "2025-05-06T12:39:06Z"}


def test_round_trip():
    items = load_bundle(json.dumps([GOOD]).encode())
    assert items[0].body == b"\x00\x01" and items[0].header("a") == "b"
    assert json.loads(dump_bundle(items)) == [GOOD]


@pytest.mark.parametrize("bad", [
    b"not json", b"{}", json.dumps([{**GOOD, "extra": 1}]).encode(), json.dumps([{**GOOD, "status": "200"}]).encode(),
    json.dumps([{**GOOD, "headers": {"a": 1}}]).encode(), json.dumps([{**GOOD, "body_b64": "!!"}]).encode(),
    json.dumps([{**GOOD, "fetched_at": "2025-05-06T12:39:06"}]).encode(), json.dumps([1]).encode(),
])
def test_malformed_bundles(bad):
    with pytest.raises(BundleInvalid) as ei:
        load_bundle(bad)
    assert ei.value.code == "collateral.bundle_invalid"
