"""The mutation corpus over ../shared/vectors (issue 11 section 5): cases, mutations, outcomes.

A *case* is one verification input set built from a manifest entry: the evidence and its collateral,
the evidence type and the vector's ``verify_time``. A *mutation* changes one byte of one item: flip a
bit, replace the byte, truncate before it, or insert a byte (extend). Each mutated case is verified
through ``ca_service.evidence.verify`` (or over HTTP, see ``tests/mutation/http.py``) and sorted:

- ``refused``: a :class:`~ca_service.errors.CAServiceError`, by code;
- ``benign``: accepted, and the item's signed content (``tests/mutation/views.py``, read without
  ca_service's parsers) is unchanged, and so are the verified claims, or they differ only where the
  claims themselves flag what they say as unverified, so no appraisal rests on it (an unmeasured event
  type or event data; a relabelled RTMR3 runtime event, counted in ``rtmr3_unverified_events``, which
  fails every ``runtime_events`` pin);
- ``accepted_signed_changed`` / ``accepted_claims_changed``: accepted although a signed byte changed,
  or with claims that differ from the unmutated case's (a finding: must be 0);
- ``crashed``: anything else raised (must be 0).

Sampling is deterministic: positions come from ``random.Random`` seeded by (seed, case, item).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ca_service.errors import CAServiceError
from ca_service.evidence import verify
from tests.mutation.views import UNSIGNED, signed_view
from tests.vectors.manifest import Vector, load_manifest

OPS = ("flip", "replace", "truncate", "extend")
SMALL = 8192  # items up to this size get every byte in the full corpus


@dataclass(frozen=True)
class Item:
    name: str
    fmt: str  # a key of views.VIEWS
    data: bytes


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    at: datetime
    evidence: Item
    collateral: tuple[Item, ...]
    mutate: tuple[str, ...]  # names of the items this case mutates (others are covered by another case)
    event_log: Item | None = None  # a TDX event log replayed against the quote's RTMRs
    baseline: str = ""  # "ok" or the refusal code of the unmutated case
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    def items(self) -> tuple[Item, ...]:
        return (self.evidence, *self.collateral, *((self.event_log,) if self.event_log else ()))

    def item(self, name: str) -> Item:
        return next(i for i in self.items() if i.name == name)


@dataclass(frozen=True)
class Mutation:
    item: str
    op: str
    offset: int
    value: int = 0  # the new byte (flip: the XOR mask)

    def apply(self, data: bytes) -> bytes:
        if self.op == "flip":
            return data[: self.offset] + bytes([data[self.offset] ^ self.value]) + data[self.offset + 1:]
        if self.op == "replace":
            return data[: self.offset] + bytes([self.value]) + data[self.offset + 1:]
        if self.op == "truncate":
            return data[: self.offset]
        return data[: self.offset] + bytes([self.value]) + data[self.offset:]  # extend

    def label(self) -> str:
        return f"{self.item}:{self.op}@{self.offset}={self.value:#04x}"


def _verify_case(case: Case, items: dict[str, bytes]) -> Any:
    return verify(case.kind, items[case.evidence.name], collateral=[items[i.name] for i in case.collateral],
                  at=case.at, event_log=items[case.event_log.name] if case.event_log else None)


def _outcome_of(case: Case, items: dict[str, bytes]) -> tuple[str, Any]:
    try:
        return "ok", _verify_case(case, items)
    except CAServiceError as exc:
        return exc.code, None


def _item(v: Vector, role: str, fmt: str, name: str | None = None) -> Item:
    return Item(name or role, fmt, v.read(role))


def _intel_cases(vectors: list[Vector]) -> list[Case]:
    out = []
    tdx_collateral = [v for v in vectors if v.tee == "tdx" and "collateral" in v.files]
    for v in vectors:
        if v.tee not in ("tdx", "sgx", "tdx-eventlog"):
            continue
        kind = "sgx-quote" if v.tee == "sgx" else "tdx-quote"
        quote = _item(v, "quote", "intel-quote")
        if "collateral" in v.files:
            coll = _item(v, "collateral", "intel-collateral")
            label = v.files["collateral"].split("/")[0]
        else:  # an event-log vector: the collateral of a TDX vector of the same time that verifies it
            pair = next((c for c in tdx_collateral if c.verify_time == v.verify_time
                         and _outcome_of(Case("", kind, v.verify_time, quote,
                                              (_item(c, "collateral", "intel-collateral"),), ()),
                                         {"quote": quote.data, "collateral": c.read("collateral")})[0] == "ok"),
                        None)
            if pair is None:
                coll, label = None, "none"
            else:
                coll, label = _item(pair, "collateral", "intel-collateral"), f"from-{pair.path}"
        collateral = (coll,) if coll else ()
        log = next((_item(v, role, fmt, "event_log") for role, fmt in (("ccel", "ccel"), ("event_log_json", "dstack-json"))
                    if role in v.files), None)
        names = tuple(i.name for i in (quote, *collateral, *((log,) if log else ())))
        out.append(Case(f"{v.path}:{label}", kind, v.verify_time, quote, collateral, names, event_log=log))
    return out


def _snp_cases(vectors: list[Vector]) -> list[Case]:
    out = []
    for v in vectors:
        if v.tee != "snp":
            continue
        coll = tuple(_item(v, r, f) for r, f in (("vek", "der-cert"), ("cert_chain", "pem-certs"), ("crl", "der-crl"))
                     if r in v.files)
        report = _item(v, "report", "snp-report")
        out.append(Case(v.path, "snp-report", v.verify_time, report, coll, tuple(i.name for i in (report, *coll))))
        if (v.dir / "hcl_report.bin").exists():
            hcl = Item("hcl_report", "hcl-report", (v.dir / "hcl_report.bin").read_bytes())
            out.append(Case(f"{v.path}:hcl", "snp-report", v.verify_time, hcl, coll, ("hcl_report",)))
    return out


def _nvidia_cases(vectors: list[Vector]) -> list[Case]:
    out = []
    for v in vectors:
        if v.tee != "nvidia":
            continue
        report, chain = _item(v, "report", "nvidia-report"), _item(v, "cert_chain", "pem-certs")
        out.append(Case(v.path, "nvidia-gpu", v.verify_time, report, (chain,), ("report", "cert_chain")))
        for key in sorted(k for k in v.files if k.startswith("rims_")):
            rims = tuple(Item(f"{key}[{i}]", "rim-xml", (v.dir / name).read_bytes())
                         for i, name in enumerate(v.files[key]))
            out.append(Case(f"{v.path}:{key}", "nvidia-gpu", v.verify_time, report, (chain, *rims),
                            tuple(r.name for r in rims)))
    return out


def _nitro_cases(vectors: list[Vector]) -> list[Case]:
    return [Case(v.path, "nitro", v.verify_time, _item(v, "cose_sign1", "cose-sign1"), (), ("cose_sign1",))
            for v in vectors if v.tee == "nitro"]


def build_cases() -> list[Case]:
    """Every manifest entry as one case or more, with its unmutated outcome recorded.

    Files that are not inputs of ``verify`` are left out: pinned roots (``root_ca``, ``device_root``,
    ``root``), copies of another role (``ask``/``ark`` = ``cert_chain``, ``pck_cert_chain`` = inside the
    quote, ``report_hex`` = ``report`` as text, Nitro ``raw`` = the COSE document in dstack's
    framing, refused as such), the CCEL's ACPI table header and dstack's ``raw`` report JSON.
    Items identical to one already mutated in an identical context are mutated once (a vector whose
    inputs all duplicate another's is listed with nothing to mutate).
    """
    vectors = load_manifest()
    cases = _intel_cases(vectors) + _snp_cases(vectors) + _nvidia_cases(vectors) + _nitro_cases(vectors)
    out, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in cases:
            context = hashlib.sha256(repr((c.kind, c.at, [hashlib.sha256(i.data).hexdigest()
                                                             for i in c.items()])).encode()).hexdigest()
            mutate = tuple(n for n in c.mutate if (context, n) not in seen)  # () for a duplicate: listed, not run
            seen.update((context, n) for n in mutate)
            items = {i.name: i.data for i in c.items()}
            code, result = _outcome_of(c, items)
            out.append(Case(c.id, c.kind, c.at, c.evidence, c.collateral, mutate, c.event_log, code,
                            dict(result.claims) if result is not None else {}))
    return out


def _other_byte(rng: random.Random, old: int) -> int:
    return (old + rng.randrange(1, 256)) % 256


def mutations(case: Case, item: Item, *, seed: int, density: float = 1.0,
              ops: tuple[str, ...] = OPS, max_positions: int | None = None) -> Iterator[Mutation]:
    """Single-byte mutations of ``item``: with ``density`` 1 every position for every op, else a
    seeded sample of that fraction of positions per op (always the first and last 64 bytes), at
    most ``max_positions`` per op."""
    rng = random.Random(f"{seed}:{case.id}:{item.name}")
    n = len(item.data)
    for op in ops:
        span = n + 1 if op == "extend" else n
        if density >= 1.0:
            positions = list(range(span))
        else:
            edge = set(range(min(64, span))) | set(range(max(0, span - 64), span))
            want = min(span, round(span * density), max_positions or span)
            k = max(0, want - len(edge))
            rest = [p for p in range(span) if p not in edge]
            positions = sorted(edge | set(rng.sample(rest, min(k, len(rest)))))
        for off in positions:
            if op == "flip":
                yield Mutation(item.name, op, off, 1 << rng.randrange(8))
            elif op == "replace":
                yield Mutation(item.name, op, off, _other_byte(rng, item.data[off]))
            elif op == "truncate":
                yield Mutation(item.name, op, off)
            else:
                yield Mutation(item.name, op, off, rng.choice((0x00, 0xFF, 0x0A, 0x20, rng.randrange(256))))


def sampled(case: Case, item: Item, *, seed: int, n: int, every_byte_upto: int = 0) -> Iterator[Mutation]:
    """The suite's share: ``n`` mutations drawn from all of ``item``'s (op, position) pairs, seeded;
    an item of at most ``every_byte_upto`` bytes gets a bit flip at every byte instead."""
    if len(item.data) <= every_byte_upto:
        yield from mutations(case, item, seed=seed, ops=("flip",))
        return
    rng = random.Random(f"{seed}:{case.id}:{item.name}:sample")
    size = len(item.data)
    for op, off in sorted({(rng.choice(OPS), rng.randrange(size)) for _ in range(n)}):
        value = {"flip": 1 << rng.randrange(8), "replace": _other_byte(rng, item.data[off]), "truncate": 0,
                 "extend": rng.randrange(256)}[op]
        yield Mutation(item.name, op, off, value)


@dataclass(frozen=True)
class Outcome:
    kind: str  # refused | benign | accepted_signed_changed | accepted_claims_changed | crashed
    detail: str  # the code, the benign reason, or the exception

    @property
    def failed(self) -> bool:
        return self.kind not in ("refused", "benign")


def _without_digest(value: Any, digest: str, original: str) -> Any:
    """``value`` with the mutated item's SHA-256 (a claim that records what was given, e.g. a RIM's
    digest) read as the original's: that claim changes with any byte, signed or not."""
    if isinstance(value, dict):
        return {k: _without_digest(v, digest, original) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_digest(v, digest, original) for v in value]
    return original if value == digest else value


def _only_unmeasured_events(before: Any, after: Any) -> bool:
    """Every event that differs keeps its register and digest, and changes only what the claims say was
    not measured: its type (``type_measured`` false: a TCG record's type is extended nowhere) or its data
    (``digest_of_data`` false) (docs/event-log.md)."""
    if not isinstance(before, list) or not isinstance(after, list) or len(before) != len(after):
        return False
    for b, a in zip(before, after, strict=True):
        if a == b:
            continue
        if a.get("imr") != b.get("imr") or a.get("digest") != b.get("digest"):
            return False
        changed = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
        unmeasured: set[str] = set()
        if a.get("type_measured") is False and b.get("type_measured") is False:
            unmeasured |= {"type", "type_id", "description"}  # the claims say the type is not measured
        if a.get("digest_of_data") is False:
            unmeasured |= {"description", "digest_of_data"}  # the claims say the data is not what was measured
        if not changed <= unmeasured:
            return False
    return True


_UNVERIFIED_EVENT_KEYS = frozenset({"imr", "type", "type_id", "digest", "description", "digest_of_data", "type_measured"})


def _only_flagged_runtime_events(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The appraisal's own flag covers the change: one or more RTMR3 runtime events were relabelled
    (their type is not measured), keep their register and digest, and are now unverified events with
    no name or payload; ``runtime_events`` lost exactly those, in log order; and
    ``rtmr3_unverified_events`` grew by exactly their number, so no ``runtime_events`` pin passes
    (policy/appraise.py ``_runtime_events``, docs/event-log.md). Any other event changes only what
    :func:`_only_unmeasured_events` allows."""
    be, ae = before.get("event_log"), after.get("event_log")
    if not isinstance(be, list) or not isinstance(ae, list) or len(be) != len(ae):
        return False
    relabelled: list[dict[str, Any]] = []
    for b, a in zip(be, ae, strict=True):
        if a == b:
            continue
        if (b.get("imr") == a.get("imr") == 3 and a.get("digest") == b.get("digest")
                and b.get("type_measured") is True and b.get("name") is not None
                and a.get("type_measured") is False and set(a) <= _UNVERIFIED_EVENT_KEYS):
            relabelled.append({"name": b["name"], "payload": b.get("payload")})
        elif not _only_unmeasured_events([b], [a]):
            return False
    runtime = before.get("runtime_events")
    unverified = before.get("rtmr3_unverified_events")
    if not relabelled or not isinstance(runtime, list) or not isinstance(unverified, int):
        return False
    left = list(runtime)
    for r in relabelled:
        if r not in left:
            return False
        left.remove(r)
    return after.get("runtime_events") == left and after.get("rtmr3_unverified_events") == unverified + len(relabelled)


def judge_accepted(case: Case, m: Mutation, mutated: bytes, claims: dict[str, Any] | None) -> Outcome:
    """An accepted mutation is benign only if the item's signed content is unchanged (checked, not
    assumed) and the verified claims equal the unmutated case's (``claims`` None: not compared)."""
    item = case.item(m.item)
    before, after = signed_view(item.fmt, item.data), signed_view(item.fmt, mutated)
    if before is None or after is None or before != after:
        return Outcome("accepted_signed_changed", f"{case.id} {m.label()}")
    if case.baseline != "ok":
        return Outcome("accepted_signed_changed", f"{case.id} {m.label()}: accepted, unmutated gives {case.baseline}")
    if claims is not None:
        original = hashlib.sha256(item.data).hexdigest()
        claims = _without_digest(claims, hashlib.sha256(mutated).hexdigest(), original)
        base = _without_digest(case.claims, original, original)
        if claims != base:
            changed = sorted(k for k in set(claims) | set(base) if claims.get(k) != base.get(k))
            if changed == ["trailing_zero_padding"] and item.fmt == "nvidia-report":
                return Outcome("benign", "nvidia-report: zero padding after the SPDM signature, recorded as "
                                         "trailing_zero_padding (issue 11 section 4)")
            if changed == ["event_log"] and _only_unmeasured_events(base["event_log"], claims["event_log"]):
                return Outcome("benign", "event log: an unmeasured event type, or event data that does not hash to "
                                         "its record's digest, which the claims flag (type_measured, "
                                         "digest_of_data false); registers and digests unchanged")
            if (set(changed) <= {"event_log", "runtime_events", "rtmr3_unverified_events"}
                    and "rtmr3_unverified_events" in changed and _only_flagged_runtime_events(base, claims)):
                return Outcome("benign", "event log: a relabelled RTMR3 runtime event (its type is not measured), "
                                         "out of runtime_events and counted in rtmr3_unverified_events, which "
                                         "fails every runtime_events pin; registers and digests unchanged")
            return Outcome("accepted_claims_changed", f"{case.id} {m.label()}: {changed}")
    return Outcome("benign", f"{item.fmt}: {UNSIGNED[item.fmt]}")


def run_entry_point(case: Case, m: Mutation) -> Outcome:
    """One mutated case through ``ca_service.evidence.verify``."""
    items = {i.name: i.data for i in case.items()}
    items[m.item] = mutated = m.apply(items[m.item])
    try:
        result = _verify_case(case, items)
    except CAServiceError as exc:
        return Outcome("refused", exc.code)
    except Exception as exc:  # the finding this corpus exists for
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        return Outcome("crashed", f"{type(exc).__name__} at {where}: {case.id} {m.label()}")
    return judge_accepted(case, m, mutated, dict(result.claims))


@dataclass
class Tally:
    tried: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    benign: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.tried += 1
        self.by_kind[o.kind] += 1
        if o.kind == "refused":
            self.codes[o.detail] += 1
        elif o.kind == "benign":
            self.benign[o.detail] += 1
        else:
            self.failures.append(f"{o.kind}: {o.detail}")


def run(cases: list[Case], plan: Callable[[Case, Item], Iterator[Mutation]],
        runner: Callable[[Case, Mutation], Outcome] = run_entry_point) -> Tally:
    tally = Tally()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            for name in case.mutate:
                for m in plan(case, case.item(name)):
                    tally.add(runner(case, m))
    return tally
