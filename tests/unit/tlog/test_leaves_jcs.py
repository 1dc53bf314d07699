"""The leaves' fast canonical JSON (tlog/leaves.canonical_json) is byte-identical to RFC 8785."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ca_service.tlog.leaves import _plain, canonical_json

# every kind of value JSON has, ASCII controls and quotes included, plus what takes the slow path
_scalars = (st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text() | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.booleans() | st.none() | st.floats(allow_nan=False, allow_infinity=False))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


@settings(max_examples=500)
@given(_values)
def test_canonical_json_is_rfc8785(value):
    assert canonical_json(value) == rfc8785.dumps(value)


def test_the_fast_path_is_taken_for_plain_values_only():
    assert _plain({"a": ["\x00\x1f\"\\", 2**53 - 1, True, None], "b": {}})
    assert not _plain({"a": 1.5})
    assert not _plain({"é": 1})
    assert not _plain(["ü"])
    assert not _plain(2**53)
    assert canonical_json({"b": "\x00\x08\t\n\x0c\r\x1f\"\\/", "a": [1, -1, 0]}) == (
        b'{"a":[1,-1,0],"b":"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\/"}')
