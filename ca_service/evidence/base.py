"""Shapes shared by every evidence verifier.

A verifier is a pure function ``(evidence bytes, Collateral, at, TrustRoots) -> VerifiedEvidence``
that raises an :class:`~ca_service.errors.EvidenceError` leaf on the first failed check. "Verified"
means every signature chains to a pinned root and the collateral is valid at ``at``; the vendor
baseline (not debug, TCB level matched...) is part of it. Policy appraisal comes after, elsewhere.

Every check has one of three results: ``pass``, ``fail`` (it was made and did not hold; the check
names the refusal code) or ``skipped`` (it could not be made, e.g. no RIM or no OCSP response was
given; never reported as passed). A verifier may return a result holding a failed check (a RIM
comparison, a revocation source that is expired): :func:`ca_service.evidence.verify` is the one
place that turns any failed check into a refusal, so no caller ever sees "verified" next to "fail".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSONValue = Any


PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True)
class Check:
    """One verification step, recorded for the output (``checks`` in the CLI's JSON).

    ``skipped``: the check could not be made (``passed`` is then False: a check not made never
    passes). ``code``: for a failed check, the stable code its refusal carries.
    """

    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False
    code: str | None = None

    def __post_init__(self) -> None:
        if self.passed and self.skipped:
            raise ValueError(f"check {self.name} cannot be both passed and skipped")

    @classmethod
    def skip(cls, name: str, detail: str) -> Check:
        return cls(name, False, detail, skipped=True)

    @classmethod
    def fail(cls, name: str, detail: str, code: str) -> Check:
        return cls(name, False, detail, code=code)

    @property
    def result(self) -> str:
        return SKIPPED if self.skipped else PASS if self.passed else FAIL

    @property
    def failed(self) -> bool:
        return not self.passed and not self.skipped

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"name": self.name, "result": self.result, "detail": self.detail}
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass(frozen=True)
class VerifiedEvidence:
    """The result of a successful cryptographic verification of one evidence item.

    ``claims`` holds JSON-serialisable values only (hex strings for bytes). ``report_data`` is the
    raw user-data field the evidence signs (64 bytes for TDX/SNP/sim, 32 for a GPU nonce...).
    """

    kind: str
    report_data: bytes
    claims: Mapping[str, JSONValue]
    checks: tuple[Check, ...]
    evidence_sha256: str
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    collateral_sha256: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = False
    # when each thing the verdict was judged against stops being valid: the nextUpdate of TCB Info,
    # QE Identity and every CRL, the earliest notAfter of each vendor certificate chain (DESIGN.md: a
    # certificate never outlives the collateral it was judged by)
    expires_at: Mapping[str, datetime] = field(default_factory=dict)
    # revocation source -> state: "good" (checked, nothing revoked) or why it is unchecked:
    # "missing" | "expired" | "invalid" | "bad_signature" (refusal code revocation.<item>_<state>)
    revocation: Mapping[str, str] = field(default_factory=dict)
    # what the verdict was accepted with although not everything was checked (``revocation.<item>_<state>``
    # accepted by a policy rule); the EAR carries them as warnings
    warnings: tuple[str, ...] = ()

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.failed)

    @property
    def skipped_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.skipped)

    @property
    def unchecked_revocation(self) -> tuple[str, ...]:
        """``revocation.<item>_<state>`` for every revocation source that was not checked."""
        return tuple(f"revocation.{item}_{state}" for item, state in sorted(self.revocation.items())
                     if state != "good")

    @property
    def earliest_expiry(self) -> tuple[str, datetime] | None:
        """The item that expires first, and when; None when nothing was judged against (sim)."""
        if not self.expires_at:
            return None
        name = min(self.expires_at, key=lambda k: (self.expires_at[k], k))
        return name, self.expires_at[name]

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "type": self.kind,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "claims": dict(self.claims),
            "checks": [c.to_json() for c in self.checks],
            "report_data": self.report_data.hex(),
            "evidence_sha256": self.evidence_sha256,
            "collateral_sha256": dict(self.collateral_sha256),
            "insecure": self.insecure,
            "expires_at": {k: v.isoformat() for k, v in sorted(self.expires_at.items())},
            "revocation": dict(self.revocation),
            "warnings": list(self.warnings),
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
