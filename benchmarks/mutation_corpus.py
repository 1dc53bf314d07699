"""The full mutation corpus over ../shared/vectors (issue 11 section 5), with counts.

Every vector of the manifest, as the cases of ``tests/mutation/corpus.py``: every byte of the items
up to 8 KiB (bit flip, byte replaced, truncated before it, a byte inserted before it), a seeded
sample of ``--density`` of the positions of larger items (collateral JSON, RIMs, event logs; at most
``--max-positions`` per op). Each mutated case
goes through ``ca_service.evidence.verify`` as of the vector's verify_time; ``--http N`` also sends a
seeded sample of N of them to POST /v1/attestations of a served app (the production-profile app on
a werkzeug loopback port; ``--postgres URL``: on a fresh PostgreSQL database, else SQLite).

Prints: tried, refused with a code (by code), accepted benign (by why: the script re-reads the
mutated item's signed content, independently of ca_service, and counts a mutation as benign only if
it is unchanged and so are the claims, or the claims change only where they flag themselves as
unverified: an unmeasured event type or data, a relabelled RTMR3 runtime event counted in
``rtmr3_unverified_events``; tests/mutation/corpus.py ``judge_accepted``), accepted with signed bytes
or claims changed, crashed. Exits 1 if any mutation crashed or was wrongly accepted.

    python benchmarks/mutation_corpus.py [--seed 11] [--density 0.25] [--max-positions 8192]
        [--http 2000 [--postgres URL]] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mutation.corpus import SMALL, Tally, build_cases, mutations, run  # noqa: E402,F401


@contextmanager
def fresh_database(server_url: str | None) -> Iterator[str | None]:
    """A new PostgreSQL database on ``server_url`` for the served CA, dropped afterwards (None: SQLite)."""
    if not server_url:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ca_mutation_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def plan_for(seed: int, density: float, cap: int, only: str | None):
    def plan(case, item):
        if only and only not in case.id:
            return iter(())
        return mutations(case, item, seed=seed, density=1.0 if len(item.data) <= SMALL else density,
                         max_positions=cap)

    return plan


def report(title: str, tally: Tally, seconds: float) -> dict[str, object]:
    wrong = tally.by_kind["accepted_signed_changed"] + tally.by_kind["accepted_claims_changed"]
    print(f"\n== {title}: {tally.tried} mutations in {seconds:.0f} s")
    print(f"tried                      {tally.tried}")
    print(f"refused with a code        {tally.by_kind['refused']}")
    for code, n in tally.codes.most_common():
        print(f"    {code:<38} {n}")
    print(f"accepted benign            {tally.by_kind['benign']}")
    for why, n in tally.benign.most_common():
        print(f"    {n:>7}  {why}")
    print(f"accepted, signed changed   {wrong}")
    print(f"crashed                    {tally.by_kind['crashed']}")
    groups: dict[str, list[str]] = {}
    for line in tally.failures:  # "kind: case item:op@..." or "crashed: Exc at file:line: case item:op@..."
        head, _, rest = line.partition(": ")
        where = rest.split(": ")[0] if head == "crashed" else ""
        words = rest.split(": ")[-1].split() if head == "crashed" else rest.split()
        groups.setdefault(f"{head} {where} {words[0]} {words[1].split(':')[0]}".replace("  ", " "), []).append(line)
    for key, lines in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"    {len(lines):>6}  {key}   e.g. {lines[0].split(' ', 2)[-1][:160]}")
    return {"tried": tally.tried, "refused": tally.by_kind["refused"], "codes": dict(tally.codes),
            "benign": tally.by_kind["benign"], "benign_why": dict(tally.benign), "wrongly_accepted": wrong,
            "crashed": tally.by_kind["crashed"], "failures": tally.failures, "seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--density", type=float, default=0.25, help="fraction of positions of items over 8 KiB")
    ap.add_argument("--max-positions", type=int, default=8192, help="per op and item (the 256 KiB/1 MiB event logs)")
    ap.add_argument("--http", type=int, default=0, help="also send this many mutations over HTTP")
    ap.add_argument("--postgres", metavar="URL", help="serve on a fresh database of this PostgreSQL server "
                    "(e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/postgres); default SQLite")
    ap.add_argument("--http-only", action="store_true", help="skip the entry-point corpus")
    ap.add_argument("--only", help="only cases whose id contains this")
    ap.add_argument("--json", type=Path, help="write the counts here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request otherwise

    t0 = time.monotonic()
    cases = build_cases()
    print(f"{len(cases)} cases from the manifest; seed {args.seed}, density {args.density} above {SMALL} bytes")
    for c in cases:
        sizes = ", ".join(f"{i.name} {len(i.data)}" for i in c.items() if i.name in c.mutate)
        print(f"    {c.id:<70} {c.kind:<11} unmutated: {c.baseline:<30} mutated: {sizes}")
    plan = plan_for(args.seed, args.density, args.max_positions, args.only)
    out: dict[str, object] = {"seed": args.seed, "density": args.density, "max_positions": args.max_positions}
    bad = 0
    if not args.http_only:
        t1 = time.monotonic()
        entry = run(cases, plan)
        out["entry_point"] = report("ca_service.evidence.verify", entry, time.monotonic() - t1)
        bad += len(entry.failures)
    if args.http:
        from tests.mutation.http import run_http, served

        everything = [(c, m) for c in cases for name in c.mutate for m in plan(c, c.item(name))]
        sample = random.Random(args.seed).sample(everything, min(args.http, len(everything)))
        t2 = time.monotonic()
        with fresh_database(args.postgres) as db_url, served(cases, db_url=db_url) as server:
            tally = run_http(server, sample)
        out["http"] = report("POST /v1/attestations", tally, time.monotonic() - t2)
        bad += len(tally.failures)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
