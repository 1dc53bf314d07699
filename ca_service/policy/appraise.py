"""Appraisal: verified evidence x policy -> every check with expected, actual and result.

Appraisal never raises on a failed check: it returns them all, so a refusal says why, item by
item. A rule this module does not know how to evaluate fails (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ca_service.evidence.base import VerifiedEvidence
from ca_service.evidence.revocation import REQUIRED
from ca_service.evidence.snp.loader import snp_loaded_digests
from ca_service.policy.model import Policy


@dataclass(frozen=True)
class AppraisalCheck:
    evidence: str
    claim: str
    expected: Any
    actual: Any
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"evidence": self.evidence, "claim": self.claim, "expected": self.expected,
                "actual": self.actual, "passed": self.passed}


@dataclass(frozen=True)
class Appraisal:
    policy_name: str
    policy_digest: str
    checks: tuple[AppraisalCheck, ...]

    @property
    def passed(self) -> bool:
        return len(self.checks) > 0 and all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[AppraisalCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy_name, "policy_digest": self.policy_digest,
                "passed": self.passed, "checks": [c.to_json() for c in self.checks]}


def _debug_of(ve: VerifiedEvidence) -> Any:
    """The debug flag, from an explicit claim or the TEE's attribute bits; None if unknown."""
    claims = ve.claims
    if isinstance(claims.get("debug"), bool):
        return claims["debug"]
    if ve.kind in ("tdx-quote", "sim") and isinstance(claims.get("td_attributes"), str):
        return bool(int.from_bytes(bytes.fromhex(claims["td_attributes"]), "little") & 1)
    if ve.kind == "sgx-quote" and isinstance(claims.get("attributes"), str):
        return bool(bytes.fromhex(claims["attributes"])[0] & 0x02)
    policy_bits = claims.get("policy")
    if ve.kind == "snp-report" and isinstance(policy_bits, dict) and isinstance(policy_bits.get("debug"), bool):
        return policy_bits["debug"]
    return None


def _any_of(claim: str) -> Callable[[VerifiedEvidence, Any], tuple[Any, bool]]:
    def check(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
        actual = ve.claims.get(claim)
        if isinstance(actual, str):
            actual = actual.lower()
        return actual, actual is not None and actual in expected
    return check


def _tcb_status(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    return ve.tcb_status, ve.tcb_status in expected


def _advisories(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    actual = sorted(ve.advisory_ids)
    return actual, set(actual) <= set(expected["allow"])


def _min_int(claim: str) -> Callable[[VerifiedEvidence, Any], tuple[Any, bool]]:
    def check(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
        actual = ve.claims.get(claim)
        return actual, isinstance(actual, int) and not isinstance(actual, bool) and actual >= expected
    return check


def _debug(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    actual = _debug_of(ve)
    return actual, actual is not None and actual == expected


def _loader_digests(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    loaded = ve.claims.get("loaded_digests")
    if not isinstance(loaded, list):
        return None, False
    return loaded, any(d in loaded for d in expected)


def _min_tcb_of(claim: str) -> Callable[[VerifiedEvidence, Any], tuple[Any, bool]]:
    """Component-wise minimum of an SEV-SNP TCB_VERSION (SEV-SNP ABI, table 3): every listed
    component must be at least its minimum; a component the report does not carry fails."""
    def check(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
        reported = ve.claims.get(claim)
        if not isinstance(reported, dict):
            return None, False
        ok = all(isinstance(reported.get(k), int) and reported[k] >= v for k, v in expected.items())
        return {k: reported.get(k) for k in expected}, ok
    return check


def _min_svn_bytes(claim: str) -> Callable[[VerifiedEvidence, Any], tuple[Any, bool]]:
    """Component-wise minimum over a 16-byte SVN array (TDX TEE_TCB_SVN, SGX CPUSVN), hex encoded."""
    def check(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
        actual = ve.claims.get(claim)
        if not isinstance(actual, str) or len(actual) != len(expected):
            return actual, False
        try:
            got, want = bytes.fromhex(actual), bytes.fromhex(expected)
        except ValueError:
            return actual, False
        return actual.lower(), all(g >= w for g, w in zip(got, want, strict=True))
    return check


def _parse_date(text: str) -> datetime | None:
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _min_tcb_date(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    """Intel tcbDate of the matched TCB level (TCB Info v3) must not be before ``expected``."""
    actual = ve.claims.get("tcb_date")
    if not isinstance(actual, str):
        return None, False
    got, want = _parse_date(actual), _parse_date(expected)
    return actual, got is not None and want is not None and got >= want


def _bits(claim: str) -> Callable[[VerifiedEvidence, Any], tuple[Any, bool]]:
    """Named flag bits of a decoded bit field (SNP guest POLICY, PLATFORM_INFO) must equal ``expected``."""
    def check(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
        field = ve.claims.get(claim)
        if not isinstance(field, dict):
            return None, False
        actual = {k: field.get(k) for k in expected}
        return actual, all(isinstance(actual[k], bool) and actual[k] is v for k, v in expected.items())
    return check


def _product(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    """SNP product line (Milan, Genoa, Turin); the stepping ("Milan-B0") is not policy."""
    actual = ve.claims.get("product_line", ve.claims.get("product"))
    return actual, isinstance(actual, str) and actual in expected


def _min_driver(ve: VerifiedEvidence, expected: Any) -> tuple[Any, bool]:
    actual = ve.claims.get("driver_version")
    if not isinstance(actual, str):
        return None, False

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())
    return actual, parts(actual) >= parts(expected)


def _rims(kind: str, which: list[str], ve: VerifiedEvidence) -> list[AppraisalCheck]:
    """NVIDIA RIMs, one at a time: each RIM the policy requires was given, verified, and every one
    of its active golden measurements matched (the check ``nvidia.rim.<which>`` passed)."""
    results = {c.name: c.result for c in ve.checks}
    rim = ve.claims.get("rim")
    out = []
    for name in which:
        actual: Any = results.get(f"nvidia.rim.{name}", "absent")
        one = rim.get(name) if isinstance(rim, dict) else None
        if actual == "pass" and isinstance(one, dict):
            actual = {"result": "pass", "mismatched_indexes": one.get("mismatched_indexes")}
        ok = (results.get(f"nvidia.rim.{name}") == "pass" and isinstance(one, dict)
              and one.get("mismatched_indexes") == [])
        out.append(AppraisalCheck(kind, f"measurements.{name}", "match_rim", actual, ok))
    return out


_SIMPLE: dict[str, Callable[[VerifiedEvidence, Any], tuple[Any, bool]]] = {
    "tcb_status": _tcb_status,
    "advisories": _advisories,
    "min_tcb_evaluation_data_number": _min_int("tcb_evaluation_data_number"),
    "debug": _debug,
    "loader_digests": _loader_digests,
    "min_tcb_date": _min_tcb_date,
    "min_tee_tcb_svn": _min_svn_bytes("tee_tcb_svn"),
    "min_cpu_svn": _min_svn_bytes("cpu_svn"),
    "min_tcb": _min_tcb_of("reported_tcb"),
    "min_launch_tcb": _min_tcb_of("launch_tcb"),
    "min_committed_tcb": _min_tcb_of("committed_tcb"),
    "min_guest_svn": _min_int("guest_svn"),
    "guest_policy": _bits("policy"),
    "platform_info": _bits("platform_info"),
    "min_driver": _min_driver,
    "min_isv_svn": _min_int("isv_svn"),
    "isv_prod_id": _any_of("isv_prod_id"),
    "vmpl": _any_of("vmpl"),
    "signing_key": _any_of("signing_key"),
    "product": _product,
    **{k: _any_of(k) for k in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig", "mrseam", "mrsignerseam",
                               "mrenclave", "mrsigner", "measurement", "host_data", "family_id", "image_id",
                               "id_key_digest")},
}


def _require_checks(kind: str, names: list[str], ve: VerifiedEvidence) -> list[AppraisalCheck]:
    """``require_checks``: each named verification check must have been made and passed; one that
    was skipped (no RIM, no revocation source given) or that this type does not make fails."""
    results = {c.name: c.result for c in ve.checks}
    return [AppraisalCheck(kind, f"check:{name}", "pass", results.get(name, "absent"), results.get(name) == "pass")
            for name in names]


# Rules whose claims only a replayed event log provides (docs/event-log.md): evidence for a policy that
# has one of them must be sent with the TD's event log, or the rule fails closed.
EVENT_LOG_RULES = frozenset({"loader_digests", "runtime_events"})


def evidence_needs(policy: Policy) -> dict[str, Any]:
    """What an attester must send for ``policy``: the required evidence types and, per type, whether
    its event log is needed. Reveals no reference value."""
    return {"required": list(policy.required),
            "items": {kind: {"event_log": bool(EVENT_LOG_RULES & set(policy.rules(kind)))}
                      for kind in policy.required}}


def _runtime_events(kind: str, expected: dict[str, list[str]], ve: VerifiedEvidence) -> list[AppraisalCheck]:
    """``runtime_events``: RTMR3 runtime events (dstack-style, replayed from the event log) pinned by
    name: the log must hold the named event, and every occurrence's payload must be a listed one.

    "Every occurrence" needs the whole of RTMR3 accounted for: an RTMR3 event that is not a verified
    runtime event (its type relabelled, say: types are not measured) could be a hidden occurrence, so
    while any remains no pin passes (``rtmr3_unverified_events``)."""
    events = ve.claims.get("runtime_events")
    unverified = ve.claims.get("rtmr3_unverified_events")
    out = []
    for name, allowed in sorted(expected.items()):
        if not isinstance(events, list) or not isinstance(unverified, int):  # no replayed log: unknown
            out.append(AppraisalCheck(kind, f"runtime_event:{name}", allowed, None, False))
            continue
        payloads = [e.get("payload") for e in events if isinstance(e, dict) and e.get("name") == name]
        if unverified:
            out.append(AppraisalCheck(kind, f"runtime_event:{name}", allowed,
                                      {"payloads": payloads, "rtmr3_unverified_events": unverified}, False))
            continue
        ok = bool(payloads) and all(p in allowed for p in payloads)
        out.append(AppraisalCheck(kind, f"runtime_event:{name}", allowed, payloads, ok))
    return out


def _appraise_item(kind: str, rules: dict[str, Any], ve: VerifiedEvidence) -> list[AppraisalCheck]:
    out: list[AppraisalCheck] = []
    if ve.failed_checks:  # ca_service.evidence.verify refuses these; never appraise one as verified
        out.append(AppraisalCheck(kind, "verified", "no failed check", [c.name for c in ve.failed_checks], False))
    for rule, expected in sorted(rules.items()):
        if rule == "require_checks":
            out.extend(_require_checks(kind, expected, ve))
        elif rule in ("rims", "measurements"):  # measurements: match_rim alone means both RIMs
            if rule == "rims" or "rims" not in rules:
                out.extend(_rims(kind, expected if rule == "rims" else ["driver", "vbios"], ve))
        elif rule == "runtime_events":
            out.extend(_runtime_events(kind, expected, ve))
        elif rule == "rtmr":
            for idx, allowed in sorted(expected.items()):
                actual, ok = _any_of(f"rtmr{idx}")(ve, allowed)
                out.append(AppraisalCheck(kind, f"rtmr{idx}", allowed, actual, ok))
        elif rule == "pcrs":
            pcrs = ve.claims.get("pcrs")
            for idx, allowed in sorted(expected.items()):
                actual = pcrs.get(idx) if isinstance(pcrs, dict) else None
                out.append(AppraisalCheck(kind, f"pcr{idx}", allowed, actual, actual in allowed))
        elif rule == "loader_digest_from":
            continue  # qualifies the SNP loader_digests rule, checked there
        elif rule == "loader_digests" and kind == "snp-report":
            source = rules.get("loader_digest_from")
            loaded = snp_loaded_digests(ve.claims, source)
            out.append(AppraisalCheck(kind, rule, expected, loaded if loaded is not None else
                                      f"no loader digest (loader_digest_from {source!r})",
                                      loaded is not None and any(d in loaded for d in expected)))
        elif rule in _SIMPLE:
            actual, ok = _SIMPLE[rule](ve, expected)
            out.append(AppraisalCheck(kind, rule, expected, actual, ok))
        else:  # a rule we cannot evaluate never passes
            out.append(AppraisalCheck(kind, rule, expected, "unsupported rule", False))
    return out


def _revocation_checks(policy: Policy, ve: VerifiedEvidence) -> list[AppraisalCheck]:
    """One check per revocation source of the item (docs/revocation.md), so the appraisal record says
    what was and was not established. ``ca_service.evidence.verify`` already refused what the policy's
    rule does not accept; this re-derives it from the policy, so evidence verified under a looser rule
    than the policy's (or not judged at all) fails here instead of passing."""
    rule = policy.revocation_rule
    out = []
    owned = REQUIRED.get(ve.kind, ())  # NVIDIA OCSP has its own checks (nvidia.ocsp) and service gate
    for item, state in sorted((i, s) for i, s in ve.revocation.items() if i in owned):
        accepted = state == "good" or (
            f"revocation.{item}_{state}" in ve.warnings
            and (rule.allow_unchecked or (state == "expired" and rule.grace.total_seconds() > 0)))
        out.append(AppraisalCheck(ve.kind, f"revocation.{item}", "good", state, accepted))
    return out


def appraise(policy: Policy, items: Sequence[VerifiedEvidence], *, insecure_allowed: bool) -> Appraisal:
    """Appraise verified evidence items against ``policy``.

    Every type in ``evidence.required`` must be present exactly once; no unrequested type may
    appear; ``sim`` evidence passes only when ``insecure_allowed`` (the insecure-dev profile).
    """
    checks: list[AppraisalCheck] = []
    kinds = [ve.kind for ve in items]
    for kind in policy.required:
        n = kinds.count(kind)
        checks.append(AppraisalCheck(kind, "present", 1, n, n == 1))
    for kind in sorted(set(kinds) - set(policy.required)):
        checks.append(AppraisalCheck(kind, "allowed_type", sorted(policy.required), kind, False))
    for ve in items:
        if ve.kind not in policy.required:
            continue
        if ve.insecure:
            checks.append(AppraisalCheck(ve.kind, "insecure_profile", "insecure-dev",
                                         "insecure-dev" if insecure_allowed else "production", insecure_allowed))
        checks.extend(_appraise_item(ve.kind, policy.rules(ve.kind), ve))
        checks.extend(_revocation_checks(policy, ve))
    return Appraisal(policy_name=policy.name, policy_digest=policy.digest, checks=tuple(checks))
