"""JSON parsing with a nesting bound checked before the parser runs.

CPython's JSON decoder recurses once per nesting level, guarded only by the interpreter's recursion
limit. When that limit is high (web3 / py_ecc set it to 100,000 on import) a body of ``[[[[...``
overflows the C stack and the worker dies with SIGSEGV instead of raising. So the depth of every
document that comes from outside (request bodies, JSON collateral inside them, policy YAML's JSON
twin) is measured first, without recursion and in C-speed passes, and a deeper one is refused.

Pure: stdlib only, usable from the evidence and policy layers.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

# Deep enough for every real document (Intel collateral JSON is ~6 levels; EAR claims ~5; policies ~6),
# far below any recursion limit.
MAX_DEPTH = 64

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = [0] * 256
for _b in b"[{":
    _STEP[_b] = 1
for _b in b"]}":
    _STEP[_b] = -1


class TooDeep(ValueError):
    """The document nests deeper than allowed (a ValueError, like any other bad JSON)."""


def nesting_depth_exceeds(text: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit`` (closed or not).

    Without recursion and at C speed: at most ``limit`` opening brackets cannot be too deep (the
    common case: two counts). Otherwise strings are removed (brackets inside them do not count),
    everything but brackets is deleted (bytes methods only: ~5x faster than a string regex), and
    the running depth is scanned up to the first level past ``limit``.
    """
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    else:
        data = bytes(text)
        encoding = json.detect_encoding(data)
        if encoding not in ("utf-8", "utf-8-sig"):
            # json.loads reads UTF-16 and UTF-32 too, where the code unit of a character such as
            # U+2200 holds a quote byte: scan the text the decoder will see, re-encoded as UTF-8.
            data = data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    # Escapes first (a run of backslashes pairs off from the left, as the decoder reads it), so
    # that every quote left opens or closes a string; outside strings lies every other piece
    # between quotes. A stray backslash outside a string is an error where the decoder stops.
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = b"".join(data.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    depths = itertools.accumulate(map(_STEP.__getitem__, skeleton))
    return next(itertools.dropwhile(limit.__ge__, depths), None) is not None


def loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` that first refuses a document nested deeper than ``limit``.

    Raises:
        TooDeep: deeper than ``limit`` (a ValueError).
        ValueError: not valid JSON (json.JSONDecodeError, UnicodeDecodeError).
    """
    if nesting_depth_exceeds(text, limit):
        raise TooDeep(f"JSON nested deeper than {limit} levels")
    return json.loads(text)
