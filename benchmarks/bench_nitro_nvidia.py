"""Per-item Nitro and NVIDIA verification time, cold (caches empty) and warm (caches filled).

    python benchmarks/bench_nitro_nvidia.py [--rounds N]

Nitro cold: COSE ES384 + four ECDSA-P384 chain links; warm: the chain is cached by certificate
digests, so a document costs CBOR parsing + one P-384 verification. NVIDIA cold: four chain links +
the report's P-384 signature (+ two RIMs through signxml and their signer chains when given); warm:
chain and RIMs cached, so a report costs parsing + one P-384 verification (+ the golden comparison).
Peer in the same process: one bare P-384 verification (the floor). Medians of N rounds; collateral
parsed once (``load_collateral``), as the service's collateral cache holds it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from ca_service.evidence.collateral_items import Collateral, load_collateral  # noqa: E402
from ca_service.evidence.nitro.chain import clear_caches as clear_nitro  # noqa: E402
from ca_service.evidence.nitro.verify import verify_genuine as verify_nitro_genuine  # noqa: E402
from ca_service.evidence.nvidia.chain import clear_caches as clear_nvidia_chain  # noqa: E402
from ca_service.evidence.nvidia.rim import clear_caches as clear_rims  # noqa: E402
from ca_service.evidence.nvidia.verify import verify_nvidia  # noqa: E402
from ca_service.evidence.trust import DEFAULT_ROOTS  # noqa: E402
from tests.vectors.manifest import vectors_for  # noqa: E402


def median_us(fn: Callable[[], object], rounds: int, before: Callable[[], None] | None = None) -> float:
    samples = []
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def row(name: str, run: Callable[[], object], clear: Callable[[], None], rounds: int) -> None:
    cold = median_us(run, max(20, rounds // 5), before=clear)
    run()
    warm = median_us(run, rounds)
    print(f"{name:64} {cold:10.0f} {warm:10.0f} {1e6 / warm:9.0f}/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()

    print(f"{'item':64} {'cold µs':>10} {'warm µs':>10} {'warm/item':>12}")
    for v in vectors_for("nitro"):
        doc = v.read("cose_sign1")
        # verify_genuine: the debug-enclave vector is refused by verify_nitro after the same work.
        row(v.id, lambda doc=doc, at=v.verify_time: verify_nitro_genuine(doc, Collateral(), at, DEFAULT_ROOTS),
            clear_nitro, args.rounds)

    def clear_nvidia() -> None:
        clear_nvidia_chain()
        clear_rims()

    for v in vectors_for("nvidia"):
        report = v.read("report")
        sets: list[tuple[str, list[bytes]]] = [("", [])]
        sets += [(f" + {k}", [(v.dir / n).read_bytes() for n in v.files[k]]) for k in v.files if k.startswith("rims_")]
        for label, extra in sets:
            coll = load_collateral([v.read("cert_chain"), *extra])
            row(v.id + label,
                lambda report=report, coll=coll, at=v.verify_time: verify_nvidia(report, coll, at, DEFAULT_ROOTS),
                clear_nvidia, args.rounds)

    key = ec.generate_private_key(ec.SECP384R1())
    sig = key.sign(b"x" * 4000, ec.ECDSA(hashes.SHA384()))
    pub = key.public_key()
    floor = median_us(lambda: pub.verify(sig, b"x" * 4000, ec.ECDSA(hashes.SHA384())), args.rounds)
    print(f"{'peer: one P-384 verify (4 KB message)':64} {'':10} {floor:10.0f} {1e6 / floor:9.0f}/s")


if __name__ == "__main__":
    main()
