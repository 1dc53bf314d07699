"""Gas per anchor and anchor latency, on the embedded chain (py-evm) and on a real Anvil node.

    python benchmarks/bench_anchor.py [--anchors 50]

Prints, per chain: gas of the first anchor (fresh storage slots) and of steady-state anchors,
the raw transaction latency (sign + send + receipt, automine), and the worker's end-to-end
latency from a new checkpoint to ``final`` (confirmations 0, SQLite in a temp dir).
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from ca_service.anchor.chain import ChainClient
from ca_service.anchor.worker import AnchorPolicy, AnchorWorker, Checkpoint
from ca_service.db.models import Base
from ca_service.db.session import Database

REPO = Path(__file__).resolve().parents[1]
ANVIL = REPO / "node_modules" / ".bin" / "anvil"
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # Anvil dev account 0


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class _Source:
    def __init__(self) -> None:
        self.size = 0

    def newest(self) -> Checkpoint | None:
        if not self.size:
            return None
        root = hashlib.sha256(self.size.to_bytes(8, "big")).digest()
        return Checkpoint(self.size, root, f"bench\n{self.size}\n{root.hex()}\n".encode())


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1e3:.1f} ms, p90 {xs[int(len(xs) * 0.9) - 1] * 1e3:.1f} ms"


def bench(chain: ChainClient, label: str, n: int) -> None:
    d = chain.deploy()
    gas: list[int] = []
    lat: list[float] = []
    for size in range(1, n + 1):
        # Realistic calldata: full-entropy 32-byte root and checkpoint hash, new every time.
        root = hashlib.sha256(size.to_bytes(8, "big")).digest()
        chash = hashlib.sha256(root).digest()
        t0 = time.perf_counter()
        est = chain.estimate_anchor_gas(d.address, size, root, chash)
        signed = chain.sign_anchor(d.address, size, root, chash, nonce=chain.nonce(), fees=chain.fees(),
                                   gas=int(est * 1.25))
        chain.broadcast(signed.raw)
        receipt = None
        while receipt is None:
            receipt = chain.receipt(signed.tx_hash)
        lat.append(time.perf_counter() - t0)
        gas.append(receipt.gas_used)
    steady = gas[1:]
    print(f"{label}: gas first anchor {gas[0]:,}; steady state min {min(steady):,} / max {max(steady):,}")
    print(f"{label}: tx latency (estimate+sign+send+receipt) {_ms(lat)} over {n}")

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        Base.metadata.create_all(db.engine)
        source = _Source()
        worker = AnchorWorker(db, chain, source, _Clock(),
                              AnchorPolicy(confirmations=0, interval_seconds=0, max_leaves=1))
        worker.tick()  # deploy
        e2e: list[float] = []
        for i in range(1, min(n, 30) + 1):
            source.size = i * 10
            t0 = time.perf_counter()
            while worker.tick().action != "final":
                pass
            e2e.append(time.perf_counter() - t0)
        db.dispose()
    print(f"{label}: worker checkpoint -> final (0 confirmations, SQLite) {_ms(e2e)} over {len(e2e)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", type=int, default=50)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    bench(ChainClient.in_process(), "embedded (py-evm)", args.anchors)
    if not ANVIL.exists():
        print("anvil: not installed (npm ci), skipped")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent"])
    try:
        chain = ChainClient.connect(f"http://127.0.0.1:{port}", private_key=DEV_KEY, chain_id=31337)
        for _ in range(100):
            try:
                chain.head()
                break
            except Exception:
                time.sleep(0.05)
        bench(chain, "anvil 1.7.1 (automine)", args.anchors)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
