"""Shapes shared by every evidence verifier.

A verifier is a pure function ``(evidence bytes, Collateral, at, TrustRoots) -> VerifiedEvidence``
that raises an :class:`~ca_service.errors.EvidenceError` leaf on the first failed check. "Verified"
means every signature chains to a pinned root and the collateral is valid at ``at``; the vendor
baseline (not debug, TCB level matched...) is part of it. Policy appraisal comes after, elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSONValue = Any


@dataclass(frozen=True)
class Check:
    """One verification step, recorded for the output (``checks`` in the CLI's JSON)."""

    name: str
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, JSONValue]:
        return {"name": self.name, "result": "pass" if self.passed else "fail", "detail": self.detail}


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

    @property
    def earliest_expiry(self) -> tuple[str, datetime] | None:
        """The item that expires first, and when; None when nothing was judged against (sim, Nitro)."""
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
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
