"""The vendor side of the tests: the real vectors' collateral as Intel PCS v4 and AMD KDS served it.

This is what the loopback replay server (``tests/collateral/replay.py``) serves in place of the vendors.
Operators make bundles with the shipped commands, ``ca-service collateral fetch --for EVIDENCE... BUNDLE``
(or ``collateral export``), and the tests make theirs the same way against the replay server
(``tests/integration/test_collateral_bundles.py``).

Nothing here is written for the tests: each vector's collateral goes through the shipped code, the
mapping a CA applies to collateral sent with a request (``collateral/offered.py``: a QuoteCollateralV3
document -> TCB Info, QE Identity, PCK CRL and Root CA CRL responses, their URLs from the signed content;
AMD certificates and CRLs -> cert_chain, CRL, VCEK) and the check ``collateral import`` applies to
every item (``collateral/verify.py``), whose validity start is the item's ``fetched_at`` (when a
recorder running then would have fetched it). Nothing is re-signed: every signed byte is the vector's own.

Usage: ``python -m tests.collateral.make_bundle OUT.json`` (or :func:`build_bundle` from tests).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ca_service.collateral.endpoints import Kind
from ca_service.collateral.offered import offered_responses
from ca_service.collateral.verify import verify_response
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_dir

_CHAINS = (Kind.VCEK_CHAIN, Kind.VLEK_CHAIN)


def vendor_entries(kind: str, items: list[bytes]) -> list[dict[str, Any]]:
    """Bundle entries for the collateral ``items`` of a ``kind`` of evidence, as the vendor serves them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD's non-positive serials (vectors README)
        pairs, _ = offered_responses(kind, items, datetime.now(UTC))
        chains = [resp.body for ep, resp in pairs if ep.kind in _CHAINS]
        return [replace(resp, fetched_at=verify_response(ep, resp, DEFAULT_ROOTS, chains).issue_date).to_json()
                for ep, resp in pairs]


def intel_entries(coll: Path) -> list[dict[str, Any]]:
    """A vector's Intel collateral directory (its ``collateral.json``, QuoteCollateralV3)."""
    return vendor_entries("tdx-quote", [(coll / "collateral.json").read_bytes()])


def amd_entries(vec: Path) -> list[dict[str, Any]]:
    """A vector's AMD cert_chain, and its CRL and VCEK where it has them (KDS publishes no VLEKs)."""
    items = [(vec / name).read_bytes() for name in ("cert_chain.pem", "crl.der", "vcek.der") if (vec / name).exists()]
    return vendor_entries("snp-report", items)


def build_bundle(root: Path | None = None) -> list[dict[str, Any]]:
    root = root or vectors_dir()
    entries: list[dict[str, Any]] = []
    for coll in sorted([*root.glob("tdx/*/collateral*"), *root.glob("sgx/*/collateral*")]):
        if (coll / "collateral.json").exists():
            entries += intel_entries(coll)
    for vec in sorted(root.glob("snp/*")):
        if (vec / "cert_chain.pem").exists():
            entries += amd_entries(vec)
    seen: set[tuple[str, str]] = set()
    unique = []
    for e in entries:
        k = (e["url"], hashlib.sha256(e["body_b64"].encode()).hexdigest())
        if k not in seen:
            seen.add(k)
            unique.append(e)
    unique.sort(key=lambda e: e["fetched_at"])  # stable: chronological, as recorded
    return unique


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.collateral.make_bundle OUT.json", file=sys.stderr)
        return 2
    Path(argv[1]).write_text(json.dumps(build_bundle(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
