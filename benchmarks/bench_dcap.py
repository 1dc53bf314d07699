"""Intel DCAP quote verification: ca-service's verifier vs dcap-qvl, side by side in one process.

Prints per-quote time (median of several runs) warm (collateral verified and cached, dcap-qvl's
collateral object in memory) and cold (our caches cleared before every quote; dcap-qvl re-reads its
collateral JSON each time), and the ratio ours / dcap-qvl.

    python benchmarks/bench_dcap.py [--runs 7] [--number 300] [--cpu]
    python benchmarks/bench_dcap.py --instructions [--number 10]

``--cpu`` times with the process's CPU clock instead of the wall clock: on a box shared with other
jobs, the wall clock counts the time other processes ran. ``--instructions`` counts the instructions
of a cold quote instead (valgrind's callgrind: a run with ``--number`` cold quotes minus a run with
none, divided by ``--number``): the same count on every run of the same code, whatever else the
box is doing, for before/after comparisons where times vary 2x from run to run. It is not a time:
Python executes fewer instructions per cycle than the assembly of a P-256 verification.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dcap_qvl  # noqa: E402

from ca_service.evidence import collateral_items, verify  # noqa: E402
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
    collateral_items.clear_cache()
    intel_collateral.clear_caches()
    intel_pck.clear_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=300)
    ap.add_argument("--cpu", action="store_true", help="CPU time of this process, not wall time")
    ap.add_argument("--instructions", action="store_true", help="callgrind instruction counts of a cold quote")
    ap.add_argument("--cold-only", nargs=3, metavar=("SIDE", "CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cold_only:
        side, path, n = args.cold_only
        cold_only(side, path, int(n))
        return
    if args.instructions:
        number = args.number if args.number != 300 else 10
        print(f"{'quote':8} {'ours Ir':>12} {'dcap-qvl Ir':>12} {'ratio':>6}   (instructions per cold quote)")
        for label, _, path in CASES:
            ours, theirs = (instructions(side, path, number) for side in ("ours", "dcap-qvl"))
            print(f"{label:8} {ours:12,} {theirs:12,} {ours / theirs:6.2f}")
        return
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    print(f"{'quote':8} {'mode':5} {'ours µs':>9} {'dcap-qvl µs':>12} {'ratio':>6}")
    for label, tee, path in CASES:
        bench_case(label, tee, path, args.number, args.runs)


def cold_calls(path: str) -> tuple[Callable[[], object], Callable[[], object]]:
    """One vector's quote verified cold: ours (caches cleared first), dcap-qvl (collateral re-read)."""
    tee = path.split("/")[0]
    v = next(x for x in vectors_for(tee) if x.path == path)
    quote, coll_bytes, at = v.read("quote"), v.read("collateral"), v.verify_time
    now = int(at.timestamp())

    def ours() -> object:
        clear_ours()
        return verify(f"{tee}-quote", quote, collateral=[coll_bytes], at=at)

    def theirs() -> object:
        return dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(coll_bytes.decode()), now)

    return ours, theirs


def cold_only(side: str, path: str, n: int) -> None:
    """Verify one vector's quote cold ``n`` times after one warm-up (run under callgrind)."""
    ours, theirs = cold_calls(path)
    fn = ours if side == "ours" else theirs
    for _ in range(n + 1):
        fn()


def instructions(side: str, path: str, n: int) -> int:
    """Instructions per cold quote: callgrind's total for ``n`` quotes minus its total for none."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (0, n):
            out = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.{count}", sys.executable,
                 __file__, "--cold-only", side, path, str(count)],
                capture_output=True, text=True, check=True).stderr
            found = re.search(r"Collected : (\d+)", out)
            if found is None:
                raise SystemExit(f"callgrind printed no total:\n{out[-2000:]}")
            totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // n


def bench_case(label: str, tee: str, path: str, number: int, runs: int) -> None:
    v = next(x for x in vectors_for(tee) if x.path == path)
    quote, coll_bytes, at = v.read("quote"), v.read("collateral"), v.verify_time
    now = int(at.timestamp())
    coll = load_collateral([coll_bytes])
    qcoll = dcap_qvl.QuoteCollateralV3.from_json(coll_bytes.decode())
    ours_cold, theirs_cold = cold_calls(path)

    def ours_warm() -> object:
        return verify(f"{tee}-quote", quote, collateral=coll, at=at)

    def theirs_warm() -> object:
        return dcap_qvl.verify(quote, qcoll, now)

    for mode, a, b, n in (
        ("warm", ours_warm, theirs_warm, number),
        ("cold", ours_cold, theirs_cold, max(20, number // 10)),
    ):
        ta = per_call(a, n, runs)
        tb = per_call(b, n, runs)
        print(f"{label:8} {mode:5} {ta * 1e6:9.1f} {tb * 1e6:12.1f} {ta / tb:6.2f}")


if __name__ == "__main__":
    main()
