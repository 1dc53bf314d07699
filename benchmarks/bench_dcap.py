"""Intel DCAP quote verification: ca-service's verifier vs dcap-qvl, side by side in one process.

Prints per-quote time (median of several runs) warm (collateral verified and cached, dcap-qvl's
collateral object in memory) and cold (our caches cleared before every quote; dcap-qvl re-reads its
collateral JSON each time), and the ratio ours / dcap-qvl.

    python benchmarks/bench_dcap.py [--runs 7] [--number 300] [--cpu]

``--cpu`` times with the process's CPU clock instead of the wall clock: on a box shared with other
jobs, the wall clock counts the time other processes ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dcap_qvl  # noqa: E402

from ca_service.evidence import verify  # noqa: E402
from ca_service.evidence.collateral_items import load_collateral  # noqa: E402
from ca_service.evidence.intel import collateral as intel_collateral  # noqa: E402
from ca_service.evidence.intel import pck as intel_pck  # noqa: E402
from tests.vectors.manifest import vectors_for  # noqa: E402

CASES = [
    ("tdx v4", "tdx", "tdx/dcapqvl-v4-uptodate"),
    ("tdx v5", "tdx", "tdx/gotdxguest-v5-uptodate"),
    ("sgx v3", "sgx", "sgx/dcapqvl-v3-config-swhardening"),
]


CLOCK: Callable[[], float] = time.perf_counter


def per_call(fn: Callable[[], object], number: int, runs: int) -> float:
    """Median over ``runs`` of the mean time per call (seconds)."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = CLOCK()
        for _ in range(number):
            fn()
        samples.append((CLOCK() - t0) / number)
    return statistics.median(samples)


def clear_ours() -> None:
    intel_collateral.clear_caches()
    intel_pck.clear_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=300)
    ap.add_argument("--cpu", action="store_true", help="CPU time of this process, not wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    print(f"{'quote':8} {'mode':5} {'ours µs':>9} {'dcap-qvl µs':>12} {'ratio':>6}")
    for label, tee, path in CASES:
        bench_case(label, tee, path, args.number, args.runs)


def bench_case(label: str, tee: str, path: str, number: int, runs: int) -> None:
    v = next(x for x in vectors_for(tee) if x.path == path)
    quote, coll_bytes, at = v.read("quote"), v.read("collateral"), v.verify_time
    now = int(at.timestamp())
    coll = load_collateral([coll_bytes])
    qcoll = dcap_qvl.QuoteCollateralV3.from_json(coll_bytes.decode())
    kind = f"{tee}-quote"

    def ours_warm() -> object:
        return verify(kind, quote, collateral=coll, at=at)

    def ours_cold() -> object:
        clear_ours()
        return verify(kind, quote, collateral=[coll_bytes], at=at)

    def theirs_warm() -> object:
        return dcap_qvl.verify(quote, qcoll, now)

    def theirs_cold() -> object:
        return dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(coll_bytes.decode()), now)

    for mode, a, b, n in (
        ("warm", ours_warm, theirs_warm, number),
        ("cold", ours_cold, theirs_cold, max(20, number // 10)),
    ):
        ta = per_call(a, n, runs)
        tb = per_call(b, n, runs)
        print(f"{label:8} {mode:5} {ta * 1e6:9.1f} {tb * 1e6:12.1f} {ta / tb:6.2f}")

if __name__ == "__main__":
    main()
