"""The mutation corpus over real HTTP: POST /v1/attestations of a served CA (werkzeug on a loopback
port, the app of ``ca-service serve``, on the given database), the CA's clock at each vector's time.

Every answer must be a 200 or an RFC 9457 problem (``application/problem+json`` with a ``code``),
never a 5xx. A 200 is an acceptance: benign only as in ``corpus.judge_accepted``, or when the mutated
item is request collateral that the CA did not use (it judges by its own, ADR 0005: the response
lists every item used and where it came from).
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

from ca_service.clock import FixedClock
from tests.mutation.corpus import Case, Mutation, Outcome, Tally, judge_accepted

# One permissive policy per evidence type: a verified item always gets an EAR (a failed appraisal is
# a 200 too), so a 200 means "verified" and a problem means "refused".
_KINDS = {
    "tdx-quote": "    tcb_status: [UpToDate, OutOfDate, SWHardeningNeeded, ConfigurationNeeded, "
                 "OutOfDateConfigurationNeeded, ConfigurationAndSWHardeningNeeded]\n",
    "sgx-quote": "    tcb_status: [UpToDate, OutOfDate, SWHardeningNeeded, ConfigurationNeeded, "
                 "OutOfDateConfigurationNeeded, ConfigurationAndSWHardeningNeeded]\n",
    "snp-report": "    debug: false\n",
    "nvidia-gpu": "    min_driver: \"500.0\"\n",
    "nitro": "    debug: false\n",
}


def policy_name(kind: str) -> str:
    return f"mutation-{kind}"


def policy_yaml(kind: str) -> str:
    # the GPU rides with a CPU item, as a deployment sends it (a GPU cannot attest the CSR's key)
    required = "[tdx-quote, nvidia-gpu]" if kind == "nvidia-gpu" else f"[{kind}]"
    extra = f"  tdx-quote:\n{_KINDS['tdx-quote']}" if kind == "nvidia-gpu" else ""
    # The vectors carry no NVIDIA OCSP answers: the GPU policy accepts an unchecked source (an EAR with
    # a warning), so a 200 still means "verified". The others keep the default: revocation is checked,
    # so a corrupted CRL must be a refusal over HTTP too.
    revocation = "revocation:\n  allow_unchecked: true\n" if kind == "nvidia-gpu" else ""
    return (f"name: {policy_name(kind)}\nevidence:\n  required: {required}\n  {kind}:\n{_KINDS[kind]}{extra}"
            f"{revocation}certificate:\n  max_lifetime: 1h\n")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _problem_ok(resp: requests.Response) -> str | None:
    """The problem's code, or None if the answer is not a well-formed 4xx problem."""
    if not 400 <= resp.status_code < 500:
        return None
    if not resp.headers.get("Content-Type", "").startswith("application/problem+json"):
        return None
    try:
        code = resp.json().get("code")
    except ValueError:
        return None
    return code if isinstance(code, str) and code else None


@dataclass
class Server:
    url: str
    svc: Any
    session: requests.Session

    def post(self, case: Case, items: dict[str, bytes]) -> requests.Response:
        self.svc.clock = FixedClock(case.at)
        item: dict[str, Any] = {"type": case.kind, "data": _b64(items[case.evidence.name]),
                                "collateral": [_b64(items[i.name]) for i in case.collateral]}
        if case.event_log is not None:
            item["event_log"] = _b64(items[case.event_log.name])
        body = {"policy": policy_name(case.kind), "evidence": [item]}
        return self.session.post(f"{self.url}/v1/attestations", json=body, timeout=60)

    def baseline(self, case: Case) -> Case:
        """The unmutated case over HTTP must give the entry point's outcome, or a 200 where the entry
        point (strict by default) refuses an unchecked revocation source that the policy accepts.
        Returns the case with the HTTP outcome as its baseline (mutations are judged against it)."""
        resp = self.post(case, {i.name: i.data for i in case.items()})
        got = "ok" if resp.status_code == 200 else _problem_ok(resp)
        policy_allows = got == "ok" and case.kind == "nvidia-gpu" and case.baseline.startswith("revocation.")
        if got != case.baseline and not policy_allows:
            raise AssertionError(f"{case.id}: unmutated over HTTP gives {got} ({resp.status_code}), "
                                 f"the entry point {case.baseline}")
        return dataclasses.replace(case, baseline=got)

    def run(self, case: Case, m: Mutation) -> Outcome:
        items = {i.name: i.data for i in case.items()}
        items[m.item] = mutated = m.apply(items[m.item])
        resp = self.post(case, items)
        if resp.status_code == 200:
            used = resp.json()["appraisal"]["collateral"].get(case.kind, [])
            if m.item != case.evidence.name and not any(u.get("source") == "request" for u in used):
                return Outcome("benign", "request collateral not used: the CA judged by its own (ADR 0005)")
            return judge_accepted(case, m, mutated, None)
        code = _problem_ok(resp)
        if code is None:
            return Outcome("crashed", f"HTTP {resp.status_code} {resp.headers.get('Content-Type')}: "
                                      f"{case.id} {m.label()}: {resp.text[:200]!r}")
        return Outcome("refused", code)


def in_time_order(plan: list[tuple[Case, Mutation]]) -> Iterator[tuple[Case, list[Mutation]]]:
    """Mutations grouped by case, cases by verify_time (then id), each group in its given order."""
    groups: dict[str, tuple[Case, list[Mutation]]] = {}
    for case, m in plan:
        groups.setdefault(case.id, (case, []))[1].append(m)
    yield from sorted(groups.values(), key=lambda g: (g[0].at, g[0].id))


def run_http(server: Server, plan: list[tuple[Case, Mutation]]) -> Tally:
    """Each case's unmutated baseline, then its mutations, cases in time order."""
    tally = Tally()
    for case, group in in_time_order(plan):
        case = server.baseline(case)
        for m in group:
            tally.add(server.run(case, m))
    return tally


@contextmanager
def served(cases: list[Case], *, db_url: str | None = None, home: Path | None = None) -> Iterator[Server]:
    """A production-profile CA with the mutation policies active, served on a loopback port.

    Its collateral cache starts empty: it takes each vector's collateral from the requests (verified
    to the pinned roots) and keeps it. Send cases in time order (:func:`in_time_order`): a CA never
    holds collateral issued after its clock, so one that did would judge older vectors by it.
    """
    import tempfile

    from ca_service.api.app import create_app
    from ca_service.services import policies
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import make_settings

    with tempfile.TemporaryDirectory() as tmp:
        home = home or Path(tmp)
        settings = make_settings(home / "home", db_url or f"sqlite:///{home / 'ca.db'}", profile="production")
        init_ca(settings)
        svc = Services.create(settings, clock=FixedClock(cases[0].at))
        for kind in sorted({c.kind for c in cases} | {"tdx-quote"}):
            ref, _ = policies.apply_policy(svc, policy_yaml(kind), actor="mutation-corpus")
            policies.activate(svc, ref.policy.name, ref.version, actor="mutation-corpus")
        server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=False)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        session = requests.Session()
        try:
            srv = Server(f"http://127.0.0.1:{server.server_port}", svc, session)
            yield srv
        finally:
            session.close()
            server.shutdown()
            thread.join(10)
            svc.close()
