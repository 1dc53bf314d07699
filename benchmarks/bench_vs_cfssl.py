"""Issuance load, side by side with CFSSL, in one run (issue 15).

    python benchmarks/bench_vs_cfssl.py [--levels 1,8,32,64] [--duration 8] [--workers 2] [--threads 8]
        [--pg postgresql+psycopg2://postgres@127.0.0.1:5432/postgres] [--serve-arg=--worker-class=...]

Needs ``cfssl`` (Debian golang-cfssl), ``wrk`` (Debian wrk) and ``openssl`` on PATH.

Peer: ``cfssl serve`` on ``POST /api/v1/cfssl/sign`` with a P-256 CA, one distinct P-256 CSR
per request. Ours: ``ca-service serve`` (insecure-dev profile, a fresh PostgreSQL database) on
``POST /v1/certificates``, the whole issuance: the challenge is consumed, the sim evidence (bound
to the challenge nonce and the CSR key) is verified, appraised against the sim policy, the
certificate is signed and stored with its appraisal and the log leaf appended, in the request.

Fair load generator: everything a client computes is done before the timed window. For each
level, ours gets fresh challenges (``POST /v1/challenges``, within their TTL: the level starts
right after), a fresh P-256 key, a CSR and a sim report per request; CFSSL gets fresh CSRs. Both
sides are then replayed by the same ``wrk`` (``benchmarks/replay.lua``, each body sent once),
with the same threads and connections. The script prints the client's and the server's CPU time
per request on each side (from /proc and wait4), so the two client costs can be compared.

For each level it prints issuances/s, p50, p99 and errors for both, and our ratio to CFSSL. At the
end it checks that our log is dense (indexes 0..n-1, one leaf per certificate, every certificate's
log index holds its leaf) and that a sample of the issued certificates passes ``openssl verify``
against the CA's root and issuing certificates.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import make_url

warnings.simplefilter("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ca_service.agent.client import make_csr  # noqa: E402
from ca_service.config import Settings  # noqa: E402
from ca_service.crypto.keys import spki_der  # noqa: E402
from ca_service.evidence.binding import binding_value  # noqa: E402
from ca_service.services.bootstrap import init_ca, load_sim_tee  # noqa: E402

LUA = Path(__file__).with_name("replay.lua")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn master + workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _stat(path: Path) -> tuple[str, float] | None:
    """The command name and user + system CPU seconds of one /proc/PID/stat, if it is still there."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants."""
    return sum(st[1] for p in process_tree(pid) if (st := _stat(Path(f"/proc/{p}/stat"))) is not None)


def postgres_cpu_seconds() -> float:
    """User + system CPU of every live PostgreSQL process on the box (postmaster, backends, WAL
    writer...): the database's share, which the server column leaves out. A backend that exits
    during the window loses its count, so this is a lower bound; the pools keep theirs open."""
    return sum(st[1] for path in Path("/proc").glob("[0-9]*/stat")
               if (st := _stat(path)) is not None and st[0] == "postgres")


def idle_seconds() -> float:
    """The box's idle CPU time so far (/proc/stat idle + iowait, all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / CLK_TCK


@dataclass
class Result:
    ok: int
    errors: int
    exhausted: int
    rate: float
    p50_ms: float
    p99_ms: float
    client_cpu_ms: float  # wrk CPU per request
    server_cpu_ms: float  # server processes' CPU per request (PostgreSQL not counted)
    pg_cpu_ms: float  # every PostgreSQL process's CPU per request
    idle: float  # share of the box's CPU left idle during the window


def run_wrk(url: str, path: str, bodies: list[str], conns: int, duration: float, server_pid: int) -> Result:
    threads = min(conns, 2)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(bodies) + "\n")
        bodies_file = f.name
    try:
        before_server = cpu_seconds(server_pid)
        before_pg, before_idle, t0 = postgres_cpu_seconds(), idle_seconds(), time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(duration))}s",
                              "--timeout", "10s", "-s", str(LUA), url, "--", bodies_file, path, str(threads)],
                             capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = cpu_seconds(server_pid) - before_server
        pg = postgres_cpu_seconds() - before_pg
        idle = (idle_seconds() - before_idle) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
    finally:
        os.unlink(bodies_file)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    w = json.loads(line.removeprefix("WRKJSON "))
    client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sock_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    ok = w["requests"] - w["non2xx"]
    # replies to /exhausted are non-2xx but not the server's errors
    errors = sock_errors + max(0, w["non2xx"] - w["exhausted"])
    n = max(1, w["requests"])
    return Result(ok=ok, errors=errors, exhausted=w["exhausted"], rate=ok / (w["duration_us"] / 1e6),
                  p50_ms=w["p50_us"] / 1000, p99_ms=w["p99_us"] / 1000,
                  client_cpu_ms=client * 1000 / n, server_cpu_ms=server * 1000 / n, pg_cpu_ms=pg * 1000 / n,
                  idle=idle)


# --- CFSSL -------------------------------------------------------------------------------------

def start_cfssl(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench cfssl root")])
    t = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(t - timedelta(minutes=5))
            .not_valid_after(t + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    (work / "cfssl-ca.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (work / "cfssl-ca-key.pem").write_bytes(key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    port = free_port()
    proc = subprocess.Popen(["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port),
                             "-ca", str(work / "cfssl-ca.pem"), "-ca-key", str(work / "cfssl-ca-key.pem")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/api/v1/cfssl/health", proc, "cfssl serve")
    return proc, url


def cfssl_bodies(n: int) -> list[str]:
    out = []
    for i in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        pem = make_csr(k, (f"n{i}.bench.cvm.local",)).public_bytes(Encoding.PEM).decode()
        out.append(json.dumps({"certificate_request": pem}))
    return out


# --- ca-service --------------------------------------------------------------------------------

def fresh_pg(base: str) -> str:
    name = f"ca_bench_{uuid.uuid4().hex[:8]}"
    with sa.create_engine(base, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_pg(base: str, url: str) -> None:
    name = make_url(url).database
    with sa.create_engine(base, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def start_ours(settings: Settings, workers: int, threads: int, extra: list[str],
               tree: Path | None = None, log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``ca-service serve`` from this checkout, or from ``tree`` (another checkout: the baseline);
    its output goes to ``log`` when given."""
    port = free_port()
    env = {**os.environ, "CA_SERVICE_HOME": str(settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": settings.database_url,
           "CA_SERVICE_RATE_LIMIT": os.environ.get("CA_SERVICE_RATE_LIMIT", "0")}  # one client floods
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "serve", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--threads", str(threads), *extra],
                            env=env, stdout=subprocess.DEVNULL if log is None else log.open("ab"),
                            stderr=subprocess.DEVNULL if log is None else subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/healthz", proc, "ca-service serve")
    return proc, url


def our_bodies(url: str, tee: Any, n: int) -> tuple[list[str], float]:
    """n ready-to-send issuance requests; returns them and the wall time the challenges took."""
    t0 = time.perf_counter()

    def challenges(count: int) -> list[dict[str, str]]:
        with requests.Session() as http:
            return [http.post(f"{url}/v1/challenges", timeout=30).json() for _ in range(count)]

    with ThreadPoolExecutor(4) as pool:
        chunks = list(pool.map(challenges, [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]))
    chs = [c for chunk in chunks for c in chunk]
    took = time.perf_counter() - t0
    out = []
    for ch in chs:
        k = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(k, ()).public_bytes(Encoding.PEM).decode()
        ev = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(k.public_key())))
        out.append(json.dumps({"challenge_id": ch["id"], "csr": csr, "policy": "sim",
                               "evidence": [{"type": "sim", "data": base64.b64encode(ev).decode()}]}))
    return out, took


def check_log_and_sample(settings: Settings, work: Path, sample: int) -> dict[str, Any]:
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as c:
        n_leaves, max_idx, distinct = c.execute(sa.text(
            "SELECT count(*), max(idx), count(DISTINCT idx) FROM tlog_entries")).one()
        n_certs, distinct_cert_idx = c.execute(sa.text(
            "SELECT count(*), count(DISTINCT log_index) FROM certificates")).one()
        missing = c.execute(sa.text(
            "SELECT count(*) FROM certificates c LEFT JOIN tlog_entries t ON t.idx = c.log_index "
            "WHERE t.idx IS NULL OR position('\"certificate_sha256\":\"' || encode(sha256(c.der), 'hex') "
            "|| '\"' in convert_from(t.leaf, 'UTF8')) = 0")).scalar_one()
        ders = [bytes(r[0]) for r in c.execute(sa.text(
            "SELECT der FROM certificates ORDER BY random() LIMIT :n"), {"n": sample})]
    engine.dispose()
    dense = n_leaves == distinct == (max_idx + 1 if max_idx is not None else 0)
    from ca_service.services.container import Services

    svc = Services.create(settings)
    (work / "root.pem").write_bytes(svc.keys.certificate("root").public_bytes(Encoding.PEM))
    (work / "issuing.pem").write_bytes(svc.keys.certificate("issuing").public_bytes(Encoding.PEM))
    svc.close()
    passed = 0
    for i, der in enumerate(ders):
        leaf = work / f"leaf{i}.pem"
        leaf.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
        r = subprocess.run(["openssl", "verify", "-CAfile", str(work / "root.pem"), "-untrusted",
                            str(work / "issuing.pem"), str(leaf)], capture_output=True, text=True)
        passed += r.returncode == 0 and r.stdout.strip().endswith(": OK")
    return {"leaves": n_leaves, "dense": dense, "certificates": n_certs,
            "one_leaf_per_certificate": distinct_cert_idx == n_certs and missing == 0,
            "sampled": len(ders), "openssl_ok": passed}


@dataclass
class Server:
    label: str
    settings: Settings
    proc: subprocess.Popen[bytes]
    url: str
    tee: Any
    guess: float = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of wrk per level and side")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `ca-service serve` argument")
    ap.add_argument("--baseline", type=Path, action="append", default=[], metavar="TREE",
                    help="also serve from this checkout (e.g. a `git worktree` of an older commit), own database")
    ap.add_argument("--sample", type=int, default=20, help="certificates checked with openssl verify")
    ap.add_argument("--pg", default=os.environ.get("CA_SERVICE_TEST_POSTGRES_URL",
                                                   "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    for tool in ("cfssl", "wrk", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (apt-get install golang-cfssl wrk openssl)")
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-cfssl-"))
    procs: list[subprocess.Popen[bytes]] = []
    dbs: list[str] = []
    servers: list[Server] = []
    try:
        cf_proc, cf_url = start_cfssl(work)
        procs.append(cf_proc)
        for i, tree in enumerate([None, *args.baseline]):
            dbs.append(fresh_pg(args.pg))
            settings = Settings(home=work / f"home{i}", profile="insecure-dev", database_url=dbs[-1])
            init_ca(settings)
            proc, url = start_ours(settings, args.workers, args.threads, args.serve_arg, tree)
            procs.append(proc)
            label = "ca-service" if tree is None else f"base:{tree.name}"[:10]
            servers.append(Server(label, settings, proc, url, load_sim_tee(settings)))
        print(f"machine: {os.cpu_count()} cores, {os.uname().release}, load {os.getloadavg()[0]:.1f}; "
              f"wrk threads = min(c, 2); {args.duration:g} s per level and side")
        print(f"ours: ca-service serve --workers {args.workers} --threads {args.threads} {' '.join(args.serve_arg)}"
              f"(PostgreSQL {make_url(dbs[0]).host}); peer: cfssl serve (sign endpoint)"
              + "".join(f"; {s.label} = {t}" for s, t in zip(servers[1:], args.baseline, strict=True)))
        head = (f"{'c':>3} | {'side':<10} | {'issuances/s':>11} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} | "
                f"{'client CPU ms/req':>17} | {'server CPU ms/req':>17} | {'PG CPU ms/req':>13} | {'idle':>4} | ratio")
        print(head)
        print("-" * len(head))
        # a short warm-up for every server (caches, connections and pools)
        run_wrk(cf_url, "/api/v1/cfssl/sign", cfssl_bodies(200), 8, 1, cf_proc.pid)
        for srv in servers:
            run_wrk(srv.url, "/v1/certificates", our_bodies(srv.url, srv.tee, 200)[0], 8, 1, srv.proc.pid)
        cf_guess = 3000.0
        for c in levels:
            n_cf = max(300, math.ceil(cf_guess * args.duration * 1.5))
            cf = run_wrk(cf_url, "/api/v1/cfssl/sign", cfssl_bodies(n_cf), c, args.duration, cf_proc.pid)
            rows: list[tuple[str, Result, int]] = [("cfssl", cf, n_cf)]
            notes = []
            for srv in servers:
                n = max(300, math.ceil(srv.guess * args.duration * 1.5))
                bodies, took = our_bodies(srv.url, srv.tee, n)
                r = run_wrk(srv.url, "/v1/certificates", bodies, c, args.duration, srv.proc.pid)
                rows.append((srv.label, r, n))
                notes.append(f"{srv.label}: {n} challenges prepared in {took:.1f} s")
                srv.guess = max(srv.guess, r.rate * 1.2)
            for label, r, n in rows:
                flag = f"  (pool of {n} ran out: raise the guess)" if r.exhausted else ""
                ratio = f"{r.rate / cf.rate:5.3f}" if r is not cf else ""
                print(f"{c:>3} | {label:<10} | {r.rate:>11.1f} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | "
                      f"{r.errors:>6} | {r.client_cpu_ms:>17.3f} | {r.server_cpu_ms:>17.3f} | {r.pg_cpu_ms:>13.3f} | "
                      f"{r.idle:>4.0%} | {ratio}{flag}")
            print(f"    ({'; '.join(notes)}, before the window; TTL {servers[0].settings.challenge_ttl_seconds} s)")
            cf_guess = max(cf_guess, cf.rate * 1.2)
        for p in procs:
            p.terminate()
            p.wait(30)
        procs.clear()
        failed = False
        for srv in servers:
            check = check_log_and_sample(srv.settings, work, args.sample)
            print(f"{srv.label} log: {check['leaves']} leaves, dense={check['dense']}; {check['certificates']} "
                  f"certificates, one leaf each={check['one_leaf_per_certificate']}; openssl verify: "
                  f"{check['openssl_ok']}/{check['sampled']} sampled certificates OK")
            failed |= not (check["dense"] and check["one_leaf_per_certificate"]
                           and check["openssl_ok"] == check["sampled"])
        if failed:
            raise SystemExit("invariant check FAILED")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        for url in dbs:
            drop_pg(args.pg, url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
