"""The embedded chain kept in CA_SERVICE_HOME (ca_service/anchor/embedded.py): the cost of an anchor
on it (estimate, sign, send, mine, append to the file) and of rebuilding it in another process.

    python benchmarks/bench_embedded_chain.py [N]    # N anchors (default 200)
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

from eth_account import Account
from web3 import Web3

from ca_service.anchor.chain import ChainClient
from ca_service.anchor.embedded import CHAIN_FILE, ChainFile, chain_dir, publisher_key

ROOT, CHASH = b"\x11" * 32, b"\x22" * 32


def client(home: Path, *, create: bool = True) -> ChainClient:
    """A client on a ChainFile of its own, as another process would have."""
    cf = ChainFile(home, create=create)
    with cf:
        account = Account.from_key(publisher_key(home)) if create else Account.create()
        c = ChainClient(Web3(cf.provider), account, embedded=True, lock=cf)
        if create:
            c._fund()
    return c


def main() -> None:
    warnings.simplefilter("ignore")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    home = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    a = client(home)
    d = a.deploy()
    t = time.perf_counter()
    for size in range(1, n + 1):
        gas = a.estimate_anchor_gas(d.address, size, ROOT, CHASH)
        signed = a.sign_anchor(d.address, size, ROOT, CHASH, nonce=a.nonce(), fees=a.fees(), gas=gas * 2)
        a.broadcast(signed.raw)
    per = (time.perf_counter() - t) / n
    size_kib = (chain_dir(home) / CHAIN_FILE).stat().st_size / 1024
    t = time.perf_counter()
    reader = client(home, create=False)
    rebuild = time.perf_counter() - t
    t = time.perf_counter()
    reader.block_hash(reader.head())
    lookup = time.perf_counter() - t
    print(f"{n} anchors: {per * 1000:.1f} ms per anchor (estimate, sign, send, mine, append); file {size_kib:.0f} KiB; "
          f"rebuilt by another process's view in {rebuild:.2f} s ({rebuild / (reader.head() or 1) * 1000:.1f} ms "
          f"a block); then a block lookup {lookup * 1000:.2f} ms")


if __name__ == "__main__":
    main()
