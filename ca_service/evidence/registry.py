"""Evidence type -> verifier. The single entry point is :func:`ca_service.evidence.verify`."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from ca_service.clock import require_aware
from ca_service.errors import (
    CollateralInvalid,
    EventLogMalformed,
    EventLogUnsupported,
    EvidenceError,
    EvidenceMalformed,
    EvidenceTypeUnknown,
    ReportDataMismatch,
    RevocationUnchecked,
    evidence_error_for,
)
from ca_service.evidence import revocation
from ca_service.evidence.base import Check, VerifiedEvidence
from ca_service.evidence.collateral_items import Collateral, load_collateral
from ca_service.evidence.revocation import RevocationRule
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots

Verifier = Callable[[bytes, Collateral, datetime, TrustRoots], VerifiedEvidence]

# Import paths, resolved lazily so one verifier's import cost or failure does not touch the others.
_VERIFIERS: dict[str, str] = {
    "sim": "ca_service.evidence.sim.verify:verify_sim",
    "tdx-quote": "ca_service.evidence.intel.verify:verify_tdx",
    "sgx-quote": "ca_service.evidence.intel.verify:verify_sgx",
    "snp-report": "ca_service.evidence.snp.verify:verify_snp",
    "nvidia-gpu": "ca_service.evidence.nvidia.verify:verify_nvidia",
    "nitro": "ca_service.evidence.nitro.verify:verify_nitro",
}

MAX_EVIDENCE_BYTES = 1 << 20
MAX_EVENT_LOG_BYTES = 2 << 20


def known_kinds() -> tuple[str, ...]:
    return tuple(_VERIFIERS)


def _resolve(kind: str) -> Verifier:
    import importlib

    target = _VERIFIERS.get(kind)
    if target is None:
        raise EvidenceTypeUnknown(f"unknown evidence type {kind!r}; known: {', '.join(sorted(_VERIFIERS))}",
                                  evidence_type=kind)
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise EvidenceTypeUnknown(f"evidence type {kind!r} is not available in this build") from exc
    verifier: Verifier = getattr(module, func)
    return verifier


def verify(
    kind: str,
    evidence: bytes,
    *,
    collateral: Iterable[bytes] | Collateral = (),
    at: datetime,
    nonce: bytes | None = None,
    roots: TrustRoots = DEFAULT_ROOTS,
    event_log: bytes | None = None,
    ima_log: bytes | None = None,
    allow_unchecked_revocation: bool = False,
    revocation_grace: timedelta = timedelta(0),
) -> VerifiedEvidence:
    """Verify one evidence item cryptographically, as of ``at``: one verdict.

    ``nonce``, when given, must equal the leading bytes of the evidence's report data.
    ``event_log`` (CCEL or dstack JSON) and ``ima_log``, when given, are replayed against the
    *verified* RTMRs and their claims added (docs/event-log.md); a log that does not replay refuses.
    The result holds no failed check: a verifier's failed check is refused here with the check's
    code (the refusal's ``partial`` keeps every check and claim). A skipped check (a revocation
    source or a RIM not given) stays skipped; a policy can require it (``require_checks``).

    Revocation (``evidence/revocation.py``, docs/revocation.md): every revocation source of the
    evidence's chains must be usable at ``at``, or the item is refused with ``revocation.<item>_<state>``.
    Only the policy's rule relaxes that: ``allow_unchecked_revocation`` (``revocation.allow_unchecked``)
    accepts any unusable source (missing, expired, unparseable, wrongly signed) as a skipped check,
    ``revocation_grace`` (``collateral.max_age_past_next_update``) an expired one whose next update is
    at most that long ago; the result then lists them in ``warnings`` and keeps their state in
    ``revocation`` so the EAR can warn.

    Raises:
        EvidenceError: a leaf naming the failed check (``evidence.*``, ``revocation.*`` codes);
            ``evidence.event_log_*`` for the event log (``evidence.event_log_mismatch`` names the RTMR).
    """
    at = require_aware(at)
    if ima_log is not None and event_log is None:
        raise EventLogUnsupported("an IMA log is replayed only beside the event log (CCEL or JSON)", field="ima_log")
    for what, blob in (("event_log", event_log), ("ima_log", ima_log)):
        if blob is not None and len(blob) > MAX_EVENT_LOG_BYTES:
            raise EventLogMalformed(f"{what} is larger than 2 MiB", field=what)
    verifier = _resolve(kind)
    if not isinstance(evidence, bytes | bytearray) or len(evidence) == 0:
        raise EvidenceMalformed("evidence is empty")
    if len(evidence) > MAX_EVIDENCE_BYTES:
        raise EvidenceMalformed("evidence is larger than 1 MiB")
    coll = (collateral if isinstance(collateral, Collateral)
            else load_collateral(collateral, keep_unparsed_crls=kind == "snp-report"))
    if coll.ocsp_unparsed and kind != "nvidia-gpu":  # only the GPU verifier judges OCSP (as a revocation source)
        raise CollateralInvalid("a collateral item shaped like an OCSP response cannot be parsed")
    result = verifier(bytes(evidence), coll, at, roots)
    if not isinstance(result, VerifiedEvidence):  # a verifier bug must never pass as success
        raise EvidenceError("verifier returned no result")
    rule = RevocationRule(allow_unchecked=allow_unchecked_revocation, grace=revocation_grace)
    result = _one_verdict(result, rule, kind=kind, at=at)
    if nonce is not None and (
        len(nonce) > len(result.report_data)
        or not hmac.compare_digest(result.report_data[: len(nonce)], nonce)
    ):
        raise ReportDataMismatch("report data does not start with the expected nonce")
    if event_log is not None:
        from ca_service.evidence.eventlog import apply_event_log

        result = apply_event_log(result, bytes(event_log), None if ima_log is None else bytes(ima_log))
        result = _one_verdict(result, rule)  # the replay's checks, too
    return result


def _one_verdict(result: VerifiedEvidence, rule: RevocationRule, *, kind: str | None = None,
                 at: datetime | None = None) -> VerifiedEvidence:
    """Refuse a result that holds a failed check (issue 11 section 3: never "ok" next to "fail").

    With ``kind`` and ``at``, revocation is judged too (:func:`revocation.judge`), after every other
    failed check: a definitive failure (a bad signature, a RIM mismatch) is the refusal it is."""
    def refuse(failed: list[Check]) -> None:
        first = failed[0]
        exc = evidence_error_for(first.code)(first.detail or f"check {first.name} failed",
                                             failed_checks=[c.name for c in failed])
        exc.partial = result
        raise exc

    def is_revocation(c: Check) -> bool:
        return (c.code or "").startswith("revocation.")

    if other := [c for c in result.failed_checks if not is_revocation(c)]:
        refuse(other)
    if kind is not None and at is not None:
        try:
            result = revocation.judge(kind, result, at, rule)
        except RevocationUnchecked as exc:
            exc.partial = result
            raise
    if rule.allow_unchecked:  # a revocation check whose verifier reports no state: skipped, and warned
        late = [c for c in result.checks if c.failed and is_revocation(c)]
        checks = tuple(
            Check.skip(c.name, f"accepted unchecked by the policy (revocation.allow_unchecked): {c.code}: {c.detail}")
            if c.failed and is_revocation(c) else c
            for c in result.checks
        )
        warnings = result.warnings + tuple(c.code for c in late if c.code and c.code not in result.warnings)
        result = replace(result, checks=checks, warnings=warnings)
    if failed := list(result.failed_checks):
        refuse(failed)
    return result
