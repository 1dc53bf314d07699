"""Issue 11 section 5: hostile input never crashes a worker. Single-byte mutations of every vector in
../shared/vectors and its collateral, through ``ca_service.evidence.verify`` and over HTTP (POST
/v1/attestations of a served CA on the session's database: PostgreSQL in the PostgreSQL run).

Nothing may be accepted when a signed byte changed (checked by re-reading the signed content,
``views.py``), and nothing but a ``CAServiceError`` may be raised (HTTP: never a 5xx, always a
problem with a code). This is the suite's seeded share; ``benchmarks/mutation_corpus.py`` runs the
full corpus and prints the counts.
"""

from __future__ import annotations

import logging
import random
import warnings

import pytest

from ca_service.errors import CAServiceError
from ca_service.evidence import verify
from tests.mutation import views
from tests.mutation.corpus import (
    Case,
    Mutation,
    _verify_case,
    build_cases,
    judge_accepted,
    run,
    run_entry_point,
    sampled,
)
from tests.mutation.http import run_http, served
from tests.vectors.manifest import load_manifest

SEED = 11
CASES = build_cases()
BY_ID = {c.id: c for c in CASES}
RUN = [c for c in CASES if c.mutate]


# Findings owned by another change, each with its reason: the corpus reports them (the script counts
# them as wrongly accepted), the suite expects them until that change lands, then the entry goes.
KNOWN_FINDINGS: dict[tuple[str, str, str], str] = {
    # (none: a relabelled TCG event type is flagged by the claims, type_measured false, and no decision
    # rests on it; a policy's runtime_events pins fail while rtmr3_unverified_events is not 0)
}


def _unexpected(case: Case, failures: list[str]) -> list[str]:
    return [f for f in failures
            if not any(case.kind == kind and f.startswith(outcome + ":") and f" {item}:" in f
                       for kind, item, outcome in KNOWN_FINDINGS)]


def _plan(case: Case, item):  # type: ignore[no-untyped-def]
    # every byte of SNP reports and AMD CRLs (<= 1184 bytes), 90 drawn mutations of each larger item
    return sampled(case, item, seed=SEED, n=90, every_byte_upto=1184)


def test_every_vector_is_a_case() -> None:
    paths = {v.path for v in load_manifest()}
    covered = {c.id.split(":")[0] for c in CASES}
    assert covered == paths
    # the unmutated outcomes are the manifest's (verify_ok where it says so)
    for v in load_manifest():
        if v.expected.get("verify_ok") is True:
            assert all(c.baseline == "ok" for c in CASES if c.id.startswith(v.path + ":")), v.path
    # (the AWS VLEK vector carries no CRL: revocation.amd_crl_missing, docs/revocation.md)
    assert sum(c.baseline == "ok" for c in CASES) >= 24
    assert all(c.baseline == "revocation.amd_crl_missing" for c in CASES if c.id.startswith("snp/milan-aws-vlek"))
    # only exact duplicates are left out (same type, time and input bytes as a case that runs)
    key = {c.id: (c.kind, c.at, [i.data for i in c.items()]) for c in CASES}
    for c in CASES:
        if not c.mutate:
            assert any(key[r.id] == key[c.id] for r in RUN), c.id


@pytest.mark.parametrize("case", RUN, ids=[c.id for c in RUN])
def test_mutations_through_the_entry_point(case: Case) -> None:
    tally = run([case], _plan)
    assert tally.tried >= 80  # 90 draws, repeats dropped
    assert _unexpected(case, tally.failures) == []
    assert tally.by_kind["refused"] > tally.by_kind["benign"]


def test_mutations_over_http(db_url_factory, tmp_path) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    rng = random.Random(SEED)
    plan = [(c, m) for c in RUN for name in c.mutate for m in rng.sample(list(_plan(c, c.item(name))), 6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with served(CASES, db_url=db_url_factory(), home=tmp_path) as server:
            tally = run_http(server, plan)
    assert tally.tried == len(plan) >= 300
    assert [f for f in tally.failures if not any(f" {c.id} " in f and not _unexpected(c, [f]) for c in RUN)] == []
    assert len(tally.codes) >= 6  # refusals name what failed, not one catch-all


# --- the benign check can fail -----------------------------------------------------------------------


def test_a_signed_byte_changed_and_accepted_is_a_finding() -> None:
    """``judge_accepted`` is what stands between "accepted" and "benign": it must see a changed signed
    byte in each format, and accept PEM whitespace and bytes after the signature as unsigned."""
    signed_offsets = {"intel-quote": 100, "snp-report": 0x50, "hcl-report": 0x70, "nvidia-report": 40,
                      "cose-sign1": 200, "pem-certs": 300, "der-cert": 300, "der-crl": 300,
                      "intel-collateral": 100, "rim-xml": 600,
                      # inside the first extended SHA-384 digest / the first "digest" value
                      "ccel": lambda d: d.index(views.ccel(d)[0][1]) + 5,
                      "dstack-json": lambda d: d.index(b'"digest":"') + 15}
    seen = set()
    for case in CASES:
        if case.baseline != "ok":
            continue
        for item in case.items():
            if item.fmt in seen:
                continue
            seen.add(item.fmt)
            where = signed_offsets[item.fmt]
            m = Mutation(item.name, "flip", where(item.data) if callable(where) else where, 0x01)
            assert judge_accepted(case, m, m.apply(item.data), None).kind == "accepted_signed_changed", item.fmt
    assert seen == set(views.VIEWS)
    quote = BY_ID["tdx/gcp-c3-v4-uptodate:collateral-2025-06"]
    assert quote.evidence.data.endswith(b"\x00" * 64)  # an 8000-byte quote: zero padding after the signature
    pad = Mutation("quote", "replace", len(quote.evidence.data) - 1, 0x41)
    assert judge_accepted(quote, pad, pad.apply(quote.evidence.data), None).kind == "benign"
    chain = BY_ID["snp/milan-virtee-vcek"].item("cert_chain")
    nl = Mutation("cert_chain", "extend", 0, 0x0A)  # a blank line before the first BEGIN
    assert views.signed_view("pem-certs", nl.apply(chain.data)) == views.signed_view("pem-certs", chain.data)


def test_a_crash_is_reported_not_raised(monkeypatch) -> None:
    import tests.mutation.corpus as corpus

    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise KeyError("x")

    monkeypatch.setattr(corpus, "verify", boom)
    out = run_entry_point(CASES[0], Mutation("quote", "flip", 0, 1))
    assert out.kind == "crashed" and out.detail.startswith("KeyError")


# --- crashes the corpus found, each a stable code now ----------------------------------------------------


def _code(case: Case, m: Mutation) -> str:
    items = {i.name: i.data for i in case.items()}
    items[m.item] = m.apply(items[m.item])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            verify(case.kind, items[case.evidence.name], collateral=[items[i.name] for i in case.collateral],
                   at=case.at)
        except CAServiceError as exc:
            return exc.code
    return "ok"


@pytest.mark.parametrize(("case", "m", "code"), [
    # X.509 version byte of the VCEK / CRL: pyca raises InvalidVersion, which is no ValueError
    ("snp/milan-gosevguest-vcek", Mutation("vek", "flip", 12, 0x20), "evidence.collateral_invalid"),
    # a CRL is a revocation source: an unparseable one is named (docs/revocation.md), and judged after
    # the verifier's own refusals, so on a vector refused for nothing else (gosevguest is a debug guest)
    ("snp/milan-virtee-vcek", Mutation("crl", "flip", 10, 0x10), "revocation.amd_crl_invalid"),
    ("snp/milan-gosevguest-vcek", Mutation("crl", "flip", 10, 0x10), "evidence.debug_enabled"),
    # a mangled ASK name / signature hash OID: pyca parses lazily, it surfaced inside the chain builder
    ("snp/milan-gosevguest-vcek", Mutation("cert_chain", "flip", 220, 0x20), "evidence.collateral_invalid"),
    ("snp/milan-gosevguest-vcek", Mutation("cert_chain", "replace", 1538, 0x33), "evidence.collateral_invalid"),
])
def test_malformed_amd_collateral_is_refused_with_a_code(case: str, m: Mutation, code: str) -> None:
    assert _code(BY_ID[case], m) == code


def test_the_unsigned_hcl_header_is_no_claim() -> None:
    case = BY_ID["snp/milan-azure-vtpm:hcl"]
    assert case.baseline == "ok" and "hcl_version" not in case.claims["azure"]
    assert _code(case, Mutation("hcl_report", "flip", 4, 0x01)) == "evidence.unsupported"  # version 0
    two = Mutation("hcl_report", "replace", 4, 0x02)  # the other version Azure uses: unsigned, accepted
    assert _code(case, two) == "ok"
    assert run_entry_point(case, two).kind == "benign"


def test_nested_collateral_json_is_a_4xx_over_http(db_url_factory, tmp_path) -> None:
    """Nested JSON in request collateral, with a policy that exists (a missing policy is refused
    before collateral is read): the CA's reading of offered Intel collateral recursed (HTTP 500)."""
    import json

    case = BY_ID["tdx/dcapqvl-v4-uptodate:collateral"]
    doc = json.loads(case.collateral[0].data)
    bombs = [b'{"tcbInfo":' * 60_000, json.dumps({**doc, "tcb_info": '{"a":' * 5000}).encode(),
             json.dumps({**doc, "qe_identity": "[" * 3000}).encode()]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with served([case], db_url=db_url_factory(), home=tmp_path) as server:
        for bomb in bombs:
            resp = server.post(case, {"quote": case.evidence.data, "collateral": bomb})
            assert resp.status_code == 422, resp.text[:300]
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            assert resp.json()["code"] == "evidence.collateral_invalid"
        server.baseline(case)  # and the CA still answers the real quote


def test_gpu_zero_padding_is_benign_and_recorded() -> None:
    """Issue 11 section 4: zero bytes after the SPDM signature are unsigned padding, accepted and counted
    in a claim; any other byte there is refused."""
    case = BY_ID["nvidia/hopper-h100-nvtrust-2025"]
    end = len(case.evidence.data)
    assert run_entry_point(case, Mutation("report", "extend", end, 0x00)).kind == "benign"
    assert _code(case, Mutation("report", "extend", end, 0x01)) == "evidence.nvidia.trailing_data"


DSTACK = "tdx-eventlog/dstack-verifier-json:from-tdx/dcapqvl-v5-no-tcb-level"


def _relabel_first_runtime_event() -> tuple[Case, Mutation]:
    """A digit of the first RTMR3 runtime event's ``event_type`` (134217729, dstack's runtime event)
    changed: the replay still matches (types are not measured), and the event drops out of runtime_events."""
    case = BY_ID[DSTACK]
    data = case.item("event_log").data
    at = data.index(b'"imr":3,"event_type":134217729') + len(b'"imr":3,"event_type":')
    return case, Mutation("event_log", "replace", at, ord("3"))


def test_a_relabelled_runtime_event_flagged_by_the_claims_is_benign() -> None:
    """The 55 tdx-eventlog results once counted "claims changed": the claims flag the relabelled event
    (rtmr3_unverified_events 0 -> 1), and while they do no runtime_events pin passes."""
    case, m = _relabel_first_runtime_event()
    out = run_entry_point(case, m)
    assert out.kind == "benign" and "relabelled RTMR3 runtime event" in out.detail, out
    # and the appraisal does refuse a pin on it: the flag is what makes the change benign
    from ca_service.policy.appraise import _runtime_events

    items = {i.name: i.data for i in case.items()}
    items[m.item] = m.apply(items[m.item])
    ve = _verify_case(case, items)
    assert ve.claims["rtmr3_unverified_events"] == 1
    checks = _runtime_events("tdx-quote", {"app-id": [e["payload"] for e in case.claims["runtime_events"]
                                                      if e["name"] == "app-id"]}, ve)
    assert [c.passed for c in checks] == [False]


def test_a_claim_change_the_claims_do_not_flag_is_still_wrong() -> None:
    """The same relabelling with the flag taken away (or not matching what changed), or a runtime event's
    payload changed with the flag up, is a finding: the judge excuses only what the claims flag."""
    import copy

    case, m = _relabel_first_runtime_event()
    mutated = m.apply(case.item("event_log").data)
    items = {i.name: i.data for i in case.items()}
    items[m.item] = mutated
    flagged = dict(_verify_case(case, items).claims)
    assert judge_accepted(case, m, mutated, flagged).kind == "benign"
    unflagged = {**flagged, "rtmr3_unverified_events": case.claims["rtmr3_unverified_events"]}
    overcounted = {**flagged, "rtmr3_unverified_events": flagged["rtmr3_unverified_events"] + 1}
    payload = copy.deepcopy(flagged)
    payload["runtime_events"][0]["payload"] = "00" * 20  # a kept runtime event says something else
    kept = copy.deepcopy(flagged)
    kept["runtime_events"] = case.claims["runtime_events"]  # still listed although relabelled
    moved = copy.deepcopy(flagged)
    first = next(i for i, e in enumerate(moved["event_log"]) if e.get("imr") == 3)
    moved["event_log"][first]["digest"] = "00" * 48  # the relabelled event's digest changed
    for name, claims in (("unflagged", unflagged), ("overcounted", overcounted), ("payload", payload),
                         ("kept", kept), ("moved", moved)):
        assert judge_accepted(case, m, mutated, claims).kind == "accepted_claims_changed", name
