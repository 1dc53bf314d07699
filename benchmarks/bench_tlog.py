"""Transparency log benchmarks: append throughput and proof latency as the log grows.

    python benchmarks/bench_tlog.py --backend sqlite
    python benchmarks/bench_tlog.py --backend postgres --pg-url postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

Append: one transaction per leaf (the issuance path: BEGIN, append_leaf, COMMIT), with 1 and
``--procs`` concurrent writer processes. Proofs: logs of 1e3, 1e5, 1e6 leaves built with the bulk
path (``append_leaves``), then inclusion and consistency proofs at random indexes through the
service functions (a fresh session and TileStore each, as one HTTP request would do).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ca_service.db.models import Base
from ca_service.db.session import Database
from ca_service.tlog import merkle
from ca_service.tlog.leaves import issuance_leaf
from ca_service.tlog.sequencer import append_leaf, append_leaves
from ca_service.tlog.store import TileStore, stored_size

AT = datetime(2026, 1, 1, tzinfo=UTC)


def leaf(i: int) -> bytes:
    d = format(i, "064x")
    return issuance_leaf(at=AT, serial=format(i + 1, "x"), certificate_sha256=d, spki_sha256=d,
                         evidence=[("tdx-quote", d)], collateral_sha256=[d], policy_name="bench",
                         policy_version=1, policy_digest=d, appraisal_status="affirming")


def _writer(url: str, n: int, offset: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    db = Database(url)
    t0 = time.perf_counter()
    for i in range(n):
        with db.transaction() as s:
            append_leaf(s, leaf(offset + i))
    out.put(time.perf_counter() - t0)
    db.dispose()


def bench_append(url: str, n: int, procs: int) -> float:
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    per = n // procs
    t0 = time.perf_counter()
    ps = [ctx.Process(target=_writer, args=(url, per, 10_000_000 * (k + 1), q)) for k in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        q.get()
    for p in ps:
        p.join()
    return per * procs / (time.perf_counter() - t0)


def build(db: Database, target: int, chunk: int = 20_000) -> float:
    t0 = time.perf_counter()
    with db.read() as s:
        size = stored_size(s)
    while size < target:
        k = min(chunk, target - size)
        with db.transaction() as s:
            append_leaves(s, [leaf(i) for i in range(size, size + k)])
        size += k
    return time.perf_counter() - t0


def bench_proofs(db: Database, size: int, samples: int) -> dict[str, float]:
    rng = random.Random(size)
    inc, con, reads = [], [], []
    with db.read() as s:
        root = TileStore(s, size).root()
    for _ in range(samples):
        m = rng.randrange(size)
        t0 = time.perf_counter()
        with db.read() as s:
            if stored_size(s) < size:
                raise SystemExit("log shrank")
            store = TileStore(s, size)
            proof = store.inclusion_proof(m)
            lh = store.leaf_hash(m)
        inc.append(time.perf_counter() - t0)
        reads.append(store.reads)
        merkle.verify_inclusion(lh, m, size, proof, root)
        old = rng.randrange(1, size + 1)
        t0 = time.perf_counter()
        with db.read() as s:
            stored_size(s)
            TileStore(s, size).consistency_proof(old)
        con.append(time.perf_counter() - t0)

    def ms(xs: list[float], q: float) -> float:
        return sorted(xs)[int(q * (len(xs) - 1))] * 1000

    return {"incl_p50_ms": ms(inc, 0.5), "incl_p95_ms": ms(inc, 0.95), "cons_p50_ms": ms(con, 0.5),
            "cons_p95_ms": ms(con, 0.95), "reads_max": max(reads), "reads_mean": statistics.mean(reads)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    ap.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--appends", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-tlog-")
    admin = None
    name = f"bench_tlog_{uuid.uuid4().hex[:8]}"
    if args.backend == "sqlite":
        url = f"sqlite:///{Path(tmp) / 'append.db'}"
        proof_url = f"sqlite:///{Path(tmp) / 'proofs.db'}"
    else:
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
            c.execute(text(f'CREATE DATABASE "{name}_p"'))
        url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
        proof_url = make_url(args.pg_url).set(database=name + "_p").render_as_string(hide_password=False)
    try:
        for u in (url, proof_url):
            d = Database(u)
            Base.metadata.create_all(d.engine)
            d.dispose()
        print(f"# backend {args.backend}")
        for procs in sorted({1, args.procs}):
            rate = bench_append(url, args.appends, procs)
            print(f"append  procs={procs:<2} one leaf per transaction: {rate:8.0f} entries/s")
        db = Database(proof_url)
        for size in [int(x) for x in args.sizes.split(",")]:
            secs = build(db, size)
            r = bench_proofs(db, size, args.samples)
            print(f"proofs  size={size:>8} (bulk build +{secs:6.1f}s): inclusion p50 {r['incl_p50_ms']:.2f} ms "
                  f"p95 {r['incl_p95_ms']:.2f} ms; consistency p50 {r['cons_p50_ms']:.2f} ms "
                  f"p95 {r['cons_p95_ms']:.2f} ms; tile reads max {r['reads_max']}")
        db.dispose()
    finally:
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}_p" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
