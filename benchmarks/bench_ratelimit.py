"""What the per-client rate limit costs a request: one ``Buckets.take`` (ca_service/ratelimit.py), on the
table ``serve`` shares between its workers (a file mapped with mmap, under flock) and on a table of
one process, and four processes taking from one bucket at once (the answer must be the burst).

    python benchmarks/bench_ratelimit.py [--n 50000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca_service.ratelimit import Buckets  # noqa: E402


def per_take(b: Buckets, n: int) -> float:
    keys = [f"/v1/certificates 10.{i % 7}.{i % 250}.{i % 200}" for i in range(n)]
    t0 = time.perf_counter()
    for k in keys:
        b.take(k)
    return (time.perf_counter() - t0) / n * 1e6


def _drain(path: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    b = Buckets(rate=0.001, burst=100, path=Path(path))
    t0 = time.perf_counter()
    allowed = sum(b.take("one client").allowed for _ in range(n))
    out.put((allowed, (time.perf_counter() - t0) / n * 1e6))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    shared = Buckets(rate=1e9, burst=10**9, path=Buckets.create(work / "shared"))
    print(f"shared table (mmap + flock): {per_take(shared, args.n):6.2f} us per take ({args.n} takes)")
    local = Buckets(rate=1e9, burst=10**9)
    print(f"one-process table:           {per_take(local, args.n):6.2f} us per take ({args.n} takes)")
    path = Buckets.create(work / "contended")
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_drain, args=(str(path), args.n // 4, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    print(f"4 processes, one bucket of 100, {args.n // 4} takes each: {sum(a for a, _ in results)} allowed, "
          f"{max(us for _, us in results):6.2f} us per take (slowest process)")


if __name__ == "__main__":
    main()
