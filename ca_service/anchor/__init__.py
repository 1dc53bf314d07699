"""Chain anchoring (web3). Importing this package never changes the interpreter's recursion limit.

py_ecc (imported by eth_account / web3) raises ``sys.setrecursionlimit`` to 100,000 when it is
imported. The limit is process-wide: in an API worker it would let any recursive parser (the JSON
decoder, a YAML composer) recurse past the C stack and kill the worker with SIGSEGV instead of
raising RecursionError. The chain code needs no deep recursion (secp256k1 signing, ABI encoding), so
py_ecc is imported here first and the limit put back.
"""

from __future__ import annotations

import sys

_limit = sys.getrecursionlimit()
try:
    import py_ecc  # noqa: F401  (imported for its side effect, then undone)
except ImportError:  # pragma: no cover - py_ecc comes with web3's dependencies
    pass
finally:
    sys.setrecursionlimit(_limit)
