"""Profile the issuance hot path in process: ``POST /v1/certificates`` through the Flask app.

    python benchmarks/profile_issuance.py [--n 500] [--sort tottime] [--top 40] [--sqlite] [--phases]

Requests (challenge, fresh key, CSR, sim report) are prepared first; only the replay of the
certificate requests is profiled (cProfile), on a fresh PostgreSQL database (or SQLite). Prints the
wall time per issuance, the SQL statements and commits per issuance, and the top functions.
``--phases`` also prints the thread CPU time per issuance of each step of ``issue_certificate``
(a probe around each function the service calls; the rest is its final transaction).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import event
from sqlalchemy.engine import make_url

warnings.simplefilter("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca_service.agent.client import make_csr  # noqa: E402
from ca_service.config import Settings  # noqa: E402
from ca_service.crypto.keys import spki_der  # noqa: E402
from ca_service.evidence.binding import binding_value  # noqa: E402
from ca_service.services.bootstrap import init_ca, load_sim_tee  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--phases", action="store_true", help="thread CPU per step of issue_certificate")
    ap.add_argument("--no-profile", action="store_true", help="no cProfile (for an outside sampler: py-spy)")
    ap.add_argument("--cpu", action="store_true", help="profile CPU time (time.process_time), not wall time")
    ap.add_argument("--pg", default=os.environ.get("CA_SERVICE_TEST_POSTGRES_URL",
                                                   "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="prof-"))
    name = f"ca_prof_{uuid.uuid4().hex[:8]}"
    if args.sqlite:
        url = f"sqlite:///{home}/ca.db"
    else:
        with sa.create_engine(args.pg, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    try:
        settings = Settings(home=home, profile="insecure-dev", database_url=url,
                            rate_limit_per_second=0)  # one client floods: the per-client limit is off
        init_ca(settings)
        from ca_service.api.app import create_app

        phases = _probe_phases() if args.phases else None

        app = create_app(settings)
        client = app.test_client()
        tee = load_sim_tee(settings)
        bodies = []
        for _ in range(args.n + 20 + args.n // 2):
            ch = client.post("/v1/challenges").get_json()
            k = ec.generate_private_key(ec.SECP256R1())
            ev = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(k.public_key())))  # type: ignore[attr-defined]
            csr = make_csr(k, ()).public_bytes(Encoding.PEM).decode()
            bodies.append(json.dumps({"challenge_id": ch["id"], "csr": csr, "policy": "sim",
                                      "evidence": [{"type": "sim", "data": base64.b64encode(ev).decode()}]}))
        for b in bodies[:20]:  # warm-up
            assert client.post("/v1/certificates", data=b, content_type="application/json").status_code == 201
        engine = app.extensions["ca_service"].db.engine
        counts = {"statements": 0, "commits": 0}

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_a: object) -> None:
            counts["statements"] += 1

        @event.listens_for(engine, "commit")
        def _commit(*_a: object) -> None:
            counts["commits"] += 1

        c0 = time.process_time()
        for b in bodies[20:20 + args.n // 2]:  # unprofiled: CPU time per issuance
            assert client.post("/v1/certificates", data=b, content_type="application/json").status_code == 201
        cpu = (time.process_time() - c0) / (args.n // 2)
        bodies = bodies[20 + args.n // 2:]
        n = len(bodies)
        counts.update(statements=0, commits=0)
        prof = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
        t0 = time.perf_counter()
        if not args.no_profile:
            prof.enable()
        for b in bodies:
            r = client.post("/v1/certificates", data=b, content_type="application/json")
            if r.status_code != 201:
                raise SystemExit(r.get_data(as_text=True))
        prof.disable()
        wall = time.perf_counter() - t0
        print(f"{'sqlite' if args.sqlite else 'postgres'}: {cpu * 1000:.2f} ms CPU per issuance without the profiler; "
              f"{wall / n * 1000:.2f} ms wall per issuance under cProfile, "
              f"{counts['statements'] / n:.1f} SQL statements and {counts['commits'] / n:.1f} commits per issuance")
        if not args.no_profile:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
            print(out.getvalue())
        if phases is not None:
            calls = phases.pop("calls")
            total = phases.pop("issue_certificate")
            print(f"thread CPU per issuance ({calls:.0f} issuances, profiled and not):")
            print(f"  {'issue_certificate':<28} {total / calls * 1000:7.3f} ms")
            for name, t in sorted(phases.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<28} {t / calls * 1000:7.3f} ms")
            print(f"  {'rest (final transaction)':<28} {(total - sum(phases.values())) / calls * 1000:7.3f} ms")
    finally:
        if not args.sqlite:
            with sa.create_engine(args.pg, isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _probe_phases() -> dict[str, float]:
    """Wrap the steps ``issue_certificate`` calls (those this version of it has) with thread CPU counters."""
    import ca_service.api.v1.certificates as view
    import ca_service.services.issuance as issuance

    acc: dict[str, float] = {"calls": 0.0, "issue_certificate": 0.0}

    def wrap(owner: object, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def probe(*a: object, **k: object) -> object:
            t = time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                acc[key] = acc.get(key, 0.0) + time.thread_time() - t

        setattr(owner, name, probe)

    for name in ("parse_csr", "consume_challenge_in", "verify_all", "check_binding", "appraise", "check_request",
                 "build_ear", "build_end_entity", "prepare_end_entity", "_pre_read", "read_challenge"):
        if hasattr(issuance, name):
            wrap(issuance, name, name)
    wrap(issuance.policies, "active_policy", "active_policy")
    inner = view.issue_certificate

    def total(*a: object, **k: object) -> object:
        acc["calls"] += 1
        t = time.thread_time()
        try:
            return inner(*a, **k)
        finally:
            acc["issue_certificate"] += time.thread_time() - t

    view.issue_certificate = total  # type: ignore[assignment]
    return acc


if __name__ == "__main__":
    main()
