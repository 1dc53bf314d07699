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
    ('["\\\\\\"[[[[", 1]', 1, False),  # an escaped backslash, then an escaped quote
    ('["\\\\", [[[1]]]]', 3, True),  # an escaped backslash ends before the closing quote
    ('["a\\u0022[[[[", 1]', 1, False),  # a \u-escaped quote opens no string
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


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32"])
def test_depth_is_measured_on_the_text_the_decoder_reads(encoding: str) -> None:
    # In UTF-16 and UTF-32 (json.loads accepts both as bytes) the code units of U+2200 and U+2222
    # hold 0x22 bytes: read as bytes, they would seem to open and close a string around the nesting.
    doc = '["\u2200\u2222", ' + "[" * 200 + "]" * 200 + ', "\u2200"]'
    data = doc.encode(encoding)
    assert json.loads(data)[0] == "\u2200\u2222"  # the decoder reads these bytes as this text
    assert boundedjson.nesting_depth_exceeds(data, 64) is True
    with pytest.raises(boundedjson.TooDeep):
        boundedjson.loads(data)
    assert boundedjson.loads(('["\u2200", ' + "[" * 60 + "]" * 60 + "]").encode(encoding))[0] == "\u2200"
