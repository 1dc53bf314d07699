"""Boot storm: N CVMs ask for a certificate at once (issue 15), on loopback.

    python benchmarks/boot_storm.py [--cvms 10000] [--addresses 10000] [--workers 2] [--threads 8]
        [--pg postgresql+psycopg2://postgres@127.0.0.1:5432/postgres] [--serve-arg=...]

``ca-service serve`` (insecure-dev, a fresh PostgreSQL database, the default per-client rate limit
ON) is started; then every CVM starts at the same instant (one asyncio task each, one new TCP
connection per request, as separate machines would): ``POST /v1/challenges``, a sim report bound
to that challenge's nonce and to the CVM's key, ``POST /v1/certificates``. A 429 or 503 is retried
after its ``Retry-After`` (required: an answer without it counts as a failure), a refused or reset
connection after 1 s; a challenge that expired meanwhile is asked for again. Everything else that
is not a 201 is a failure.

CVM i connects from its own loopback address (``127.a.b.c``, one of ``--addresses``): with
``--addresses`` equal to ``--cvms`` every CVM is its own rate-limit client; with fewer, the CVMs
sharing an address share its bucket (burst 50, 10/s), so most are told 429 and retry.

The keys and CSRs are made before the storm; the reports (one P-256 signature each) are built in
the storm, by this client process on the same 2 cores, as the CVMs would.

Printed: the time until the last CVM holds its certificate, latency percentiles per CVM (first
request to certificate), how many answers were 429 / 503 (each with Retry-After) and connection
retries, the peak memory (VmHWM) of the server processes and of this client, and the checks: every
CVM served exactly once (one certificate per key, no key twice), the log dense with one leaf per
certificate, a sample passing ``openssl verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_vs_cfssl as bench  # noqa: E402

from ca_service.agent.client import make_csr  # noqa: E402
from ca_service.config import Settings  # noqa: E402
from ca_service.crypto.keys import spki_der  # noqa: E402
from ca_service.evidence.binding import binding_value  # noqa: E402
from ca_service.services.bootstrap import init_ca, load_sim_tee  # noqa: E402

RETRY_STATUSES = (429, 503)


@dataclass
class Stats:
    retry_429: int = 0
    retry_503: int = 0
    no_retry_after: int = 0
    connect_retries: int = 0
    connect_errors: dict[str, int] = field(default_factory=dict)  # by exception type
    rechallenged: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    served: dict[int, str] = field(default_factory=dict)  # cvm -> serial


def source_address(i: int, addresses: int) -> str:
    """CVM ``i``'s loopback source address (127.0.0.0/8 is all local on Linux)."""
    n = i % addresses
    return f"127.{1 + n // 62500}.{(n // 250) % 250}.{1 + n % 250}"


async def http_post(host: str, port: int, src: str, path: str, body: bytes,
                    timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One POST on a new connection from ``src`` (``Connection: close``): status, headers, body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(src, 0)), timeout)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, payload


async def ask(host: str, port: int, src: str, path: str, body: bytes, stats: Stats,
              timeout: float) -> tuple[int, bytes]:
    """POST until the answer is neither 429/503 (retried after Retry-After) nor a lost connection."""
    while True:
        try:
            status, headers, payload = await http_post(host, port, src, path, body, timeout)
        except (TimeoutError, OSError, IndexError, ValueError) as exc:
            stats.connect_retries += 1
            # IndexError/ValueError: the connection closed before a whole status line came back
            name = type(exc).__name__
            stats.connect_errors[name] = stats.connect_errors.get(name, 0) + 1
            await asyncio.sleep(1.0)
            continue
        if status not in RETRY_STATUSES:
            return status, payload
        if status == 429:
            stats.retry_429 += 1
        else:
            stats.retry_503 += 1
        retry_after = headers.get("retry-after", "")
        if not retry_after.isdigit():
            stats.no_retry_after += 1
            return status, payload
        await asyncio.sleep(int(retry_after))


async def cvm(i: int, key: Any, csr: str, tee: Any, host: str, port: int, src: str, stats: Stats,
              start: asyncio.Event, timeout: float) -> None:
    await start.wait()
    t0 = time.perf_counter()
    for _attempt in range(5):
        status, payload = await ask(host, port, src, "/v1/challenges", b"", stats, timeout)
        if status != 201:
            stats.failures.append(f"cvm {i}: challenge {status} {payload[:200]!r}")
            return
        ch = json.loads(payload)
        report = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())))
        body = json.dumps({"challenge_id": ch["id"], "csr": csr, "policy": "sim",
                           "evidence": [{"type": "sim", "data": base64.b64encode(report).decode()}]}).encode()
        status, payload = await ask(host, port, src, "/v1/certificates", body, stats, timeout)
        if status == 201:
            if i in stats.served:
                stats.failures.append(f"cvm {i}: served twice")
            stats.served[i] = json.loads(payload)["serial"]
            stats.latencies.append(time.perf_counter() - t0)
            return
        if status == 400 and json.loads(payload).get("code") in ("challenge.expired", "challenge.unknown"):
            # it waited out its challenge's TTL (unknown: expired and purged since): ask for another
            stats.rechallenged += 1
            continue
        stats.failures.append(f"cvm {i}: certificate {status} {payload[:200]!r}")
        return
    stats.failures.append(f"cvm {i}: challenge expired five times")


def vm_hwm_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def storm(args: argparse.Namespace, url: str, tee: Any, keys: list[tuple[Any, str]],
                stats: Stats) -> float:
    host, port = url.removeprefix("http://").split(":")
    start = asyncio.Event()
    tasks = [asyncio.create_task(cvm(i, k, csr, tee, host, int(port), source_address(i, args.addresses), stats,
                                     start, args.timeout)) for i, (k, csr) in enumerate(keys)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cvms", type=int, default=10_000)
    ap.add_argument("--addresses", type=int, default=0, help="distinct client addresses (default: one per CVM)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP attempt")
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--show-errors", type=int, default=5, help="server error lines printed on failures")
    ap.add_argument("--pg", default=os.environ.get("CA_SERVICE_TEST_POSTGRES_URL",
                                                   "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    args.addresses = args.addresses or args.cvms
    need = args.cvms + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    work = Path(tempfile.mkdtemp(prefix="boot-storm-"))
    db = bench.fresh_pg(args.pg)
    proc = None
    try:
        settings = Settings(home=work / "home", profile="insecure-dev", database_url=db)
        init_ca(settings)
        os.environ.setdefault("CA_SERVICE_RATE_LIMIT", "10")  # the default limit, on (the bench turns it off)
        server_log = work / "serve.log"
        proc, url = bench.start_ours(settings, args.workers, args.threads, args.serve_arg, log=server_log)
        tee = load_sim_tee(settings)
        t = time.perf_counter()
        keys = []
        for _ in range(args.cvms):
            k = ec.generate_private_key(ec.SECP256R1())
            keys.append((k, make_csr(k, ()).public_bytes(Encoding.PEM).decode()))
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.cvms} CVMs from "
              f"{args.addresses} loopback addresses; ca-service serve --workers {args.workers} --threads "
              f"{args.threads} {' '.join(args.serve_arg)}, rate limit {os.environ['CA_SERVICE_RATE_LIMIT']}/s "
              f"per client; keys and CSRs made in {time.perf_counter() - t:.1f} s before the storm")
        stats = Stats()
        took = asyncio.run(storm(args, url, tee, keys, stats))
        server_kib = vm_hwm_kib(bench.process_tree(proc.pid))
        client_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        served = len(stats.served)
        print(f"served {served}/{args.cvms} CVMs in {took:.1f} s ({served / took:.1f} certificates/s); "
              f"per CVM p50 {pct(stats.latencies, 0.5):.1f} s, p99 {pct(stats.latencies, 0.99):.1f} s, "
              f"max {max(stats.latencies, default=float('nan')):.1f} s")
        print(f"told to retry: {stats.retry_429} x 429, {stats.retry_503} x 503 (without Retry-After: "
              f"{stats.no_retry_after}); connection retries {stats.connect_retries} {stats.connect_errors}; "
              f"new challenge after "
              f"expiry {stats.rechallenged}; failures {len(stats.failures)}")
        for f in stats.failures[:10]:
            print("  " + f)
        if stats.failures:  # what the server said about them (its errors, access lines left out)
            errors = [line for line in server_log.read_text(errors="replace").splitlines()
                      if '"levelname": "ERROR"' in line or "Traceback" in line or "Error" in line]
            for line in errors[:args.show_errors]:
                print("  server: " + (line if len(line) <= 900 else line[:300] + " ... " + line[-600:]))
        print(f"peak memory (VmHWM): server processes {server_kib / 1024:.0f} MiB in all "
              f"(master + {args.workers} workers), client {client_kib / 1024:.0f} MiB")
        proc.terminate()
        proc.wait(30)
        proc = None
        check = bench.check_log_and_sample(settings, work, args.sample)
        engine = sa.create_engine(db)
        with engine.connect() as c:
            distinct_keys, certs = c.execute(sa.text(
                "SELECT count(DISTINCT spki_sha256), count(*) FROM certificates")).one()
        engine.dispose()
        once = distinct_keys == certs == served == len(set(stats.served.values()))
        print(f"log: {check['leaves']} leaves, dense={check['dense']}; {certs} certificates for {distinct_keys} keys "
              f"(none issued twice: {once}), one leaf each={check['one_leaf_per_certificate']}; openssl verify "
              f"{check['openssl_ok']}/{check['sampled']} OK")
        if not (served == args.cvms and once and check["dense"] and check["one_leaf_per_certificate"]
                and check["openssl_ok"] == check["sampled"] and not stats.failures):
            raise SystemExit("boot storm check FAILED")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        bench.drop_pg(args.pg, db)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
