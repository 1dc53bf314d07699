"""Chain anchoring (web3). Importing this package never changes the interpreter's recursion limit.

py_ecc (imported by eth_account / web3) raises ``sys.setrecursionlimit`` to 100,000 when it is
imported, and py-evm (``eth``, imported by the embedded and in-process chains through eth_tester) to
12,288. The limit is process-wide: in an API worker it would let any recursive parser (the JSON
decoder, a YAML composer) recurse past the C stack and kill the worker with SIGSEGV instead of
raising RecursionError. The chain code needs no deep recursion (secp256k1 signing, ABI encoding, an
anchor contract that makes no nested calls), so py_ecc is imported here first and the limit put
back, and py-evm is imported under :func:`recursion_limit_kept` where it is first needed (lazily: the
API process reaches it on ``GET /v1/anchors``, whose confirmer reads the embedded chain).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def recursion_limit_kept() -> Iterator[None]:
    """Run an import that sets the recursion limit (py_ecc, py-evm) and put the limit back."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


with recursion_limit_kept():
    try:
        import py_ecc  # noqa: F401  (imported for its side effect, then undone)
    except ImportError:  # pragma: no cover - py_ecc comes with web3's dependencies
        pass
