"""The JSON nesting bound: measured without recursion, strings do not count, deep input refused."""

from __future__ import annotations

import json

import pytest

from ca_service import boundedjson


@pytest.mark.parametrize(("text", "limit", "deep"), [
    ("[[[]]]", 3, False),
    ("[[[[]]]]", 3, True),
    ('{"a": {"b": [1, {"c": []}]}}', 5, False),
    ('{"a": {"b": [1, {"c": []}]}}', 4, True),
    ('["[[[[[[[[", "{{{{{{{{"]', 1, False),  # brackets inside strings do not count
    ('["\\"[[[[[[", "]]]]]\\\\"]', 1, False),  # nor behind escaped quotes
    ("[" * 200_000, 64, True),  # unclosed: the parser would recurse before failing
    ("[]" * 100_000, 64, False),  # wide, not deep
    ("1", 0, False),
])
def test_depth(text: str, limit: int, deep: bool) -> None:
    assert boundedjson.nesting_depth_exceeds(text, limit) is deep
    assert boundedjson.nesting_depth_exceeds(text.encode(), limit) is deep


def test_loads_refuses_deep_and_parses_the_rest() -> None:
    with pytest.raises(boundedjson.TooDeep):
        boundedjson.loads(b"[" * 65 + b"]" * 65)
    assert boundedjson.loads(b"[" * 64 + b"]" * 64) == json.loads("[" * 64 + "]" * 64)
    assert boundedjson.loads('{"a": "x]"}') == {"a": "x]"}
    with pytest.raises(ValueError):
        boundedjson.loads(b"{")
