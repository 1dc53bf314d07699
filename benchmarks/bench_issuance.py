"""Sim-flow issuance latency and throughput, on SQLite and PostgreSQL, side by side.

    python benchmarks/bench_issuance.py [--n 300] [--pg postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]

1. service level: challenge + issue_certificate() in process (no HTTP), N sequential requests;
   prints p50/p95/mean latency per backend, and the cost of the parts (sim verify, P-256 sign).
2. HTTP: `ca-service serve` (gunicorn, 2 workers) on loopback, 8 client threads doing the whole
   agent exchange (POST challenge, POST certificate); prints requests/s and p50/p95.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import make_url

warnings.simplefilter("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca_service.agent.client import make_csr  # noqa: E402
from ca_service.config import Settings  # noqa: E402
from ca_service.crypto.keys import spki_der  # noqa: E402
from ca_service.evidence.binding import binding_value  # noqa: E402
from ca_service.services.bootstrap import init_ca, load_sim_tee  # noqa: E402
from ca_service.services.challenges import create_challenge  # noqa: E402
from ca_service.services.container import Services  # noqa: E402
from ca_service.services.issuance import CertificateRequest, EvidenceItem, issue_certificate  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def fresh_pg(base: str) -> str:
    name = f"ca_bench_{uuid.uuid4().hex[:8]}"
    with sa.create_engine(base, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def service_level(label: str, settings: Settings, n: int) -> None:
    init_ca(settings)
    svc = Services.create(settings)
    tee = load_sim_tee(settings)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
    csrs = [make_csr(k, ("bench.cvm.local",)).public_bytes(Encoding.PEM).decode() for k in keys]
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        ch = create_challenge(svc)
        ev = tee.report(binding_value(ch.nonce, spki_der(keys[i].public_key())))  # type: ignore[attr-defined]
        issue_certificate(svc, CertificateRequest(ch.id, csrs[i], "sim", (EvidenceItem("sim", ev),)))
        lat.append((time.perf_counter() - t0) * 1000)
    lat = lat[10:]
    print(f"  {label:<10} service level: p50 {statistics.median(lat):6.2f} ms  p95 {pct(lat, .95):6.2f} ms  "
          f"mean {statistics.mean(lat):6.2f} ms  ({len(lat)} issuances, challenge + sim report + issue)")
    svc.close()


def http_level(label: str, settings: Settings, n: int, clients: int = 8) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CA_SERVICE_HOME": str(settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": settings.database_url,
           "CA_SERVICE_RATE_LIMIT": os.environ.get("CA_SERVICE_RATE_LIMIT", "0")}  # one client floods
    proc = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "serve", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        tee = load_sim_tee(settings)
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
        csrs = [make_csr(k, ()).public_bytes(Encoding.PEM).decode() for k in keys]

        def one(i: int) -> float:
            with requests.Session() as http:
                t0 = time.perf_counter()
                ch = http.post(f"{url}/v1/challenges", timeout=30).json()
                ev = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(keys[i].public_key())))  # type: ignore[attr-defined]
                r = http.post(f"{url}/v1/certificates", timeout=30, json={
                    "challenge_id": ch["id"], "csr": csrs[i], "policy": "sim",
                    "evidence": [{"type": "sim", "data": base64.b64encode(ev).decode()}]})
                assert r.status_code == 201, r.text
                return (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            lat = list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
        print(f"  {label:<10} HTTP (gunicorn 2 workers, {clients} clients): {n / wall:6.1f} issuances/s  "
              f"p50 {statistics.median(lat):6.2f} ms  p95 {pct(lat, .95):6.2f} ms")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--pg", default=os.environ.get("CA_SERVICE_TEST_POSTGRES_URL",
                                                   "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    print(f"sim-flow issuance, n={args.n}")
    for label, url_fn in (("sqlite", lambda h: f"sqlite:///{h}/ca.db"), ("postgres", lambda h: fresh_pg(args.pg))):
        home = Path(tempfile.mkdtemp(prefix="bench-"))
        try:
            settings = Settings(home=home, profile="insecure-dev", database_url=url_fn(home))
        except Exception as exc:  # no PostgreSQL: say so and go on
            print(f"  {label}: skipped ({type(exc).__name__})")
            continue
        service_level(label, settings, args.n)
        http_level(label, settings, args.n)


if __name__ == "__main__":
    main()
