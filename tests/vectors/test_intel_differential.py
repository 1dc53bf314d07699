"""Differential test against dcap-qvl (an independent Rust verifier, test-only dependency).

For every Intel vector, and for a few thousand seeded mutations of the quotes, ours and dcap-qvl agree
on accept/refuse, and when both accept, on the TCB status and advisory IDs.
"""

from __future__ import annotations

import random

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.intel.parse import parse_quote
from tests.vectors.manifest import Vector, vectors_for

dcap_qvl = pytest.importorskip("dcap_qvl")

VECTORS = vectors_for("tdx") + vectors_for("sgx")
MUTATIONS_PER_VECTOR = 250  # x 18 vectors = 4,500 mutated quotes


def _id(v: Vector) -> str:
    return f"{v.path}:{v.files['collateral'].split('/')[0]}"


def ours(v: Vector, quote: bytes) -> tuple[bool, str | None, list[str]]:
    try:
        r = verify(f"{v.tee}-quote", quote, collateral=[v.read("collateral")], at=v.verify_time)
    except EvidenceError as exc:
        return False, exc.code, []
    return True, r.tcb_status, list(r.advisory_ids)


def theirs(v: Vector, quote: bytes, coll: object) -> tuple[bool, str | None, list[str]]:
    try:
        r = dcap_qvl.verify(quote, coll, int(v.verify_time.timestamp()))
    except Exception as exc:  # dcap-qvl raises ValueError/RuntimeError with a message
        return False, str(exc), []
    return True, r.status, list(r.advisory_ids)


def _agree(a: tuple[bool, str | None, list[str]], b: tuple[bool, str | None, list[str]]) -> bool:
    if a[0] != b[0]:
        return False
    return not a[0] or (a[1], a[2]) == (b[1], b[2])


def _strict_by_design(quote: bytes, off: int) -> bool:
    """Bytes where we follow the Intel spec more strictly than dcap-qvl (we refuse, it accepts).

    - v4/v5 outer certification data type must be 6 (QE report certification data); dcap-qvl
      decodes the body as type 6 whatever the type says.
    - The Intel SGX Root CA copy at the end of the PCK chain must be the pinned root, as in Intel's
      QVL; dcap-qvl (webpki) ignores the carried copy and builds the path to its own root.
    """
    q = parse_quote(quote)
    outer_type = q.signed_len + 4 + 128
    if q.header.version >= 4 and outer_type <= off < outer_type + 2:
        return True
    chain_at = quote.index(q.cert_data)
    root_at = chain_at + q.cert_data.rindex(b"-----BEGIN CERTIFICATE-----")
    return root_at <= off < chain_at + len(q.cert_data)


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_vector_agrees_with_dcap_qvl(v: Vector) -> None:
    coll = dcap_qvl.QuoteCollateralV3.from_json(v.read("collateral").decode())
    quote = v.read("quote")
    assert _agree(ours(v, quote), theirs(v, quote, coll))


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_mutated_quotes_agree_with_dcap_qvl(v: Vector) -> None:
    coll = dcap_qvl.QuoteCollateralV3.from_json(v.read("collateral").decode())
    quote = v.read("quote")
    rng = random.Random(f"intel-diff:{_id(v)}")
    disagreements = []
    for _ in range(MUTATIONS_PER_VECTOR):
        m = bytearray(quote)
        kind = rng.random()
        off = rng.randrange(len(m))
        if kind < 0.9:
            m[off] ^= rng.randrange(1, 256)
        else:
            m = m[:off]  # truncation
        mq = bytes(m)
        a, b = ours(v, mq), theirs(v, mq, coll)
        if not _agree(a, b) and not (kind < 0.9 and not a[0] and b[0] and _strict_by_design(quote, off)):
            disagreements.append((off, kind < 0.9, a, b))
    assert not disagreements, disagreements[:5]
