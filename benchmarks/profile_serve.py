"""Sample ``ca-service serve`` workers with py-spy while wrk replays prepared issuances.

    python benchmarks/profile_serve.py [--c 32] [--duration 10] [--n 4000] [--serve-arg=...]

Needs py-spy (``pip install py-spy``), wrk and PostgreSQL. Prints, from the collapsed stacks of
every worker: the share of samples per leaf function and per ca_service / library function on the
stack (inclusive), idle samples excluded (py-spy --idle is off: only running threads are sampled).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_vs_cfssl as bench  # noqa: E402

from ca_service.config import Settings  # noqa: E402
from ca_service.services.bootstrap import init_ca, load_sim_tee  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--c", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--gil", action="store_true",
                    help="sample only the thread holding the GIL (py-spy --gil): where the workers' Python CPU goes")
    ap.add_argument("--pg", default=os.environ.get("CA_SERVICE_TEST_POSTGRES_URL",
                                                   "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not on PATH (pip install py-spy)")
    work = Path(tempfile.mkdtemp(prefix="prof-serve-"))
    db = bench.fresh_pg(args.pg)
    proc = None
    try:
        settings = Settings(home=work / "home", profile="insecure-dev", database_url=db)
        init_ca(settings)
        proc, url = bench.start_ours(settings, args.workers, args.threads, args.serve_arg)
        tee = load_sim_tee(settings)
        bench.run_wrk(url, "/v1/certificates", bench.our_bodies(url, tee, 200)[0], 8, 1, proc.pid)
        bodies, _ = bench.our_bodies(url, tee, args.n)
        out = work / "stacks.txt"
        spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "--subprocesses", "--format", "raw",
                                "-r", "200", "-d", str(args.duration), "-o", str(out), "-p", str(proc.pid),
                                *(["--gil"] if args.gil else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result: dict[str, bench.Result] = {}
        t = threading.Thread(target=lambda: result.update(
            r=bench.run_wrk(url, "/v1/certificates", bodies, args.c, args.duration, proc.pid)))  # type: ignore[union-attr]
        t.start()
        t.join()
        spy.wait(60)
        r = result["r"]
        print(f"c={args.c}: {r.rate:.1f} issuances/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, errors {r.errors}, "
              f"server CPU {r.server_cpu_ms:.2f} ms/request")
        leaf: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += n
            leaf[_short(frames[-1])] += n
            for name in {_short(f) for f in frames}:
                incl[name] += n
        print(f"{total} samples of running threads")
        print("\ninclusive (on the stack), ca_service and chosen libraries:")
        keep = ("ca_service/", "sqlalchemy/orm", "sqlalchemy/engine/base", "psycopg2", "flask/app", "gunicorn/",
                "cryptography/", "json/", "prometheus_client/", "werkzeug/", "pydantic")
        for name, n in incl.most_common():
            if any(k in name for k in keep):
                print(f"  {100 * n / total:5.1f}%  {name}")
                if n / total < 0.01:
                    break
        print("\nself (leaf frames):")
        for name, n in leaf.most_common(args.top):
            print(f"  {100 * n / total:5.1f}%  {name}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        bench.drop_pg(args.pg, db)
        shutil.rmtree(work, ignore_errors=True)


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``pkg/mod.py:func``."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/ca_service/", "/lib/python3"):
        if marker in path:
            path = ("ca_service/" if marker == "/ca_service/" else "") + path.split(marker, 1)[1]
            break
    return f"{path}:{func}"


if __name__ == "__main__":
    main()
