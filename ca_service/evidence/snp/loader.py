"""Where an SEV-SNP trusted loader's digest is read (PURE; DESIGN.md flow 2).

An SNP guest has no run-time registers a loader could extend, so its digest is fixed at launch,
in one of two places the policy names (``snp-report.loader_digest_from``):

- ``host_data``: HOST_DATA (SEV-SNP ABI, table 23: 32 bytes the host gives SNP_LAUNCH_FINISH),
  read as ``sha256:<hex>``, the SHA-256 of the loader the host launched;
- ``measurement``: the launch MEASUREMENT (48 bytes), read as ``sha384:<hex>``, when the loader is
  part of the launched image itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SOURCES = {"host_data": ("host_data", "sha256", 64), "measurement": ("measurement", "sha384", 96)}


def snp_loaded_digests(claims: Mapping[str, Any], source: object) -> list[str] | None:
    """The loader digest(s) the report shows under ``source``, or None if ``source`` is unknown or
    the claim is missing (so a ``loader_digests`` rule fails closed)."""
    if not isinstance(source, str) or source not in SOURCES:
        return None
    claim, alg, length = SOURCES[source]
    value = claims.get(claim)
    if not isinstance(value, str) or len(value) != length:
        return None
    return [f"{alg}:{value.lower()}"]
