"""The real ARK-Milan CRL corrupted byte by byte (issue 11 section 2; docs/revocation.md), with counts.

Every byte of ``snp/milan-virtee-vcek/crl.der`` XORed with 0x01, 0x80 and 0xFF, each beside the
genuine VCEK and cert_chain, through ``ca_service.evidence.verify`` as of the vector's verify_time.
Prints the outcomes by code; exits 1 if any corrupted CRL was accepted or raised anything but a
CAServiceError.

    python benchmarks/crl_corruption.py
"""

from __future__ import annotations

import collections
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca_service.errors import CAServiceError  # noqa: E402
from ca_service.evidence import verify  # noqa: E402
from tests.vectors.manifest import vectors_for  # noqa: E402


def main() -> int:
    warnings.simplefilter("ignore")  # AMD's serial-0 VCEKs
    v = next(v for v in vectors_for("snp") if v.id == "snp/milan-virtee-vcek")
    crl, report, base = v.read("crl"), v.read("report"), [v.read("vek"), v.read("cert_chain")]
    out: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    for off in range(len(crl)):
        for mask in (0x01, 0x80, 0xFF):
            m = bytearray(crl)
            m[off] ^= mask
            try:
                verify("snp-report", report, collateral=[*base, bytes(m)], at=v.verify_time)
                out["ACCEPTED"] += 1
            except CAServiceError as exc:
                out[exc.code] += 1
            except Exception as exc:  # noqa: BLE001 - what this script exists to find
                out[f"CRASH {type(exc).__name__}"] += 1
    print(f"{sum(out.values())} corrupted CRLs in {time.perf_counter() - t0:.1f} s")
    for code, n in out.most_common():
        print(f"  {n:5d} {code}")
    return 1 if any(k == "ACCEPTED" or k.startswith("CRASH") for k in out) else 0


if __name__ == "__main__":
    sys.exit(main())
