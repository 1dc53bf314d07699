"""Revocation is checked, or the refusal says why not (issue 11 section 2; docs/revocation.md).

A verifier whose evidence chains to a vendor that publishes revocation reports, for each revocation
source, its state in ``VerifiedEvidence.revocation``: ``good`` (the source verified to the pinned root,
is valid at ``at`` and lists nothing in the chain; a listed certificate is refused by the verifier
with ``evidence.certificate_revoked``) or why revocation is not established: ``missing``, ``expired``,
``invalid`` (unparseable) or ``bad_signature`` (not signed by the pinned issuer). Its check is
``revocation.<item>``.

:func:`judge` is the one place that turns a state into a verdict, under a :class:`RevocationRule`
(from the policy; :data:`STRICT` when there is none):

1. ``good``: nothing to say.
2. ``expired`` because ``at`` is past its next update (``expires_at``), by at most the rule's ``grace``
   (policy ``collateral.max_age_past_next_update``; a source not yet valid gets none): accepted; the check passes
   (the stale source was consulted) and the result carries the warning ``revocation.<item>_expired``.
3. any state, when the rule's ``allow_unchecked`` (policy ``revocation.allow_unchecked``) is set:
   accepted; the check is *skipped* (never passed) and the result carries ``revocation.<item>_<state>``
   as a warning. The item's expiry no longer caps the certificate (it was not judged by it).
4. otherwise: refused with ``revocation.<item>_<state>``.

A family listed in :data:`REQUIRED` that reports no state for an item is judged as ``missing``:
forgetting to report is never "not checked, pass". A family not listed (NVIDIA: docs/nvidia-gpu.md)
reports its revocation checks itself: a failed ``revocation.*`` check is refused by
``ca_service.evidence.verify`` unless ``allow_unchecked``; one it leaves skipped (no OCSP response
offline) is refused at issuance and appraisal by the service unless the policy accepts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ca_service.errors import REVOCATION_ITEMS, REVOCATION_STATES, revocation_error
from ca_service.evidence.base import Check, VerifiedEvidence

GOOD = "good"

# The revocation sources judged here, per evidence type (DESIGN.md "Evidence, collateral, trust roots").
# NVIDIA OCSP is judged by its verifier's own checks (nvidia.ocsp); Nitro's is not checked offline
# (nitro.revocation, skipped); sim has none.
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "tdx-quote": ("intel_pck_crl", "intel_root_ca_crl"),
    "sgx-quote": ("intel_pck_crl", "intel_root_ca_crl"),
    "snp-report": ("amd_crl",),
}

# where each item's next update is in VerifiedEvidence.expires_at
EXPIRY_KEY: Mapping[str, str] = {
    "intel_pck_crl": "intel.pck_crl",
    "intel_root_ca_crl": "intel.root_ca_crl",
    "amd_crl": "amd.crl",
    "nvidia_ocsp": "nvidia.ocsp",
}


@dataclass(frozen=True)
class RevocationRule:
    """What a policy accepts when revocation is not established (default: nothing)."""

    allow_unchecked: bool = False
    grace: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.grace < timedelta(0):
            raise ValueError("a grace period is not negative")

    def to_json(self) -> dict[str, object]:
        return {"allow_unchecked": self.allow_unchecked, "grace_seconds": int(self.grace.total_seconds())}


STRICT = RevocationRule()


def check_name(item: str) -> str:
    return f"revocation.{item}"


def judge(kind: str, result: VerifiedEvidence, at: datetime, rule: RevocationRule = STRICT) -> VerifiedEvidence:
    """The result with every revocation state judged under ``rule`` (module docstring, steps 1-4).

    Raises:
        RevocationUnchecked leaves (``revocation.<item>_<state>``, fields ``item`` and ``state``).
        ValueError: a verifier reported an item or state outside the code scheme (a programming error).
    """
    states = dict(result.revocation)
    owned = REQUIRED.get(kind, ())
    for item in owned:
        states.setdefault(item, "missing")
    checks = list(result.checks)
    warnings = list(result.warnings)
    expires = dict(result.expires_at)
    for item, state in sorted((i, s) for i, s in states.items() if i in owned):
        if item not in REVOCATION_ITEMS or (state != GOOD and state not in REVOCATION_STATES):
            raise ValueError(f"revocation state {state!r} of {item!r} is not in the code scheme")
        name = check_name(item)
        idx = next((i for i, c in enumerate(checks) if c.name == name), None)
        if state == GOOD:
            if idx is None or not checks[idx].passed:  # a "good" the verifier did not show passing
                raise ValueError(f"{kind} reports {item} good without a passed {name} check")
            continue
        code = f"revocation.{item}_{state}"
        detail = checks[idx].detail if idx is not None else f"the {kind} verifier reported no {item}"
        next_update = expires.get(EXPIRY_KEY[item])
        if state == "expired" and next_update is not None and next_update < at <= next_update + rule.grace:
            late = at - next_update
            accepted = Check(name, True, f"{detail}; {late} past its next update, within the policy's grace "
                                         f"(collateral.max_age_past_next_update {rule.grace})")
        elif rule.allow_unchecked:
            accepted = Check.skip(name, f"not checked ({code}: {detail}); accepted by the policy "
                                        "(revocation.allow_unchecked)")
            expires.pop(EXPIRY_KEY[item], None)
        else:
            raise revocation_error(item, state)(detail, item=item, state=state, evidence_type=kind)
        if idx is None:
            checks.append(accepted)
        else:
            checks[idx] = accepted
        if code not in warnings:
            warnings.append(code)
    return replace(result, revocation=states, checks=tuple(checks), warnings=tuple(warnings), expires_at=expires)
