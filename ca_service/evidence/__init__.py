"""Evidence verification (pure: bytes in, VerifiedEvidence out; no DB, no HTTP, no Flask)."""

from ca_service.evidence.base import Check, VerifiedEvidence
from ca_service.evidence.registry import known_kinds, verify
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots

__all__ = ["Check", "VerifiedEvidence", "TrustRoots", "DEFAULT_ROOTS", "known_kinds", "verify"]
