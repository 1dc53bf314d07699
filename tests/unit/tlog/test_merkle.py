"""RFC 9162 tree hashing and proofs against a naive recursive implementation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca_service.errors import ConsistencyProofInvalid, InclusionProofInvalid, ProofUnavailable
from ca_service.tlog import merkle


def _naive_mth(d: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, literally."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _naive_mth(d[:k]) + _naive_mth(d[k:])).digest()


def _naive_path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1, literally."""
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return _naive_path(m, d[:k]) + [_naive_mth(d[k:])]
    return _naive_path(m - k, d[k:]) + [_naive_mth(d[:k])]


def _naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1, literally."""
    n = len(d)
    if m == n:
        return [] if b else [_naive_mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _naive_subproof(m, d[:k], b) + [_naive_mth(d[k:])]
    return _naive_subproof(m - k, d[k:], False) + [_naive_mth(d[:k])]


def _leaves(n: int) -> list[bytes]:
    return [b"leaf-%d" % i for i in range(n)]


# Small sizes exhaustively (cheap), the rest by hypothesis.
SIZES = list(range(0, 70))


@pytest.mark.parametrize("n", SIZES)
def test_root_matches_naive(n: int) -> None:
    d = _leaves(n)
    expected = _naive_mth(d)
    assert merkle.root_of_leaves(d) == expected
    if n:
        get = merkle.hashes_source([merkle.leaf_hash(x) for x in d])
        assert merkle.tree_hash(n, get) == expected


@pytest.mark.parametrize("n", range(1, 40))
def test_all_proofs_small_trees(n: int) -> None:
    d = _leaves(n)
    hashes = [merkle.leaf_hash(x) for x in d]
    get = merkle.hashes_source(hashes)
    root = _naive_mth(d)
    for m in range(n):
        proof = merkle.inclusion_proof(m, n, get)
        assert proof == _naive_path(m, d)
        merkle.verify_inclusion(hashes[m], m, n, proof, root)
    for m in range(1, n + 1):
        proof = merkle.consistency_proof(m, n, get)
        assert proof == (_naive_subproof(m, d, True) if m < n else [])
        merkle.verify_consistency(m, n, _naive_mth(d[:m]), root, proof)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.one_of(st.integers(1, 400), st.integers(401, 3000)))
def test_proofs_property(data: st.DataObject, n: int) -> None:
    d = _leaves(n)
    hashes = [merkle.leaf_hash(x) for x in d]
    get = merkle.hashes_source(hashes)
    root = merkle.root_of_leaf_hashes(hashes)
    assert merkle.tree_hash(n, get) == root
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(m, n, get)
    if n <= 400:
        assert root == _naive_mth(d)
        assert proof == _naive_path(m, d)
    merkle.verify_inclusion(hashes[m], m, n, proof, root)
    old = data.draw(st.integers(1, n))
    cproof = merkle.consistency_proof(old, n, get)
    if n <= 400 and old < n:
        assert cproof == _naive_subproof(old, d, True)
    old_root = merkle.root_of_leaf_hashes(hashes[:old])
    merkle.verify_consistency(old, n, old_root, root, cproof)
    # Any tampering is refused: a flipped bit in one hash, a wrong index, a wrong size.
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(InclusionProofInvalid):
            merkle.verify_inclusion(hashes[m], m, n, bad, root)
        with pytest.raises(InclusionProofInvalid):
            merkle.verify_inclusion(hashes[m], m, n, proof[:-1], root)
    if n > 1:
        with pytest.raises(InclusionProofInvalid):
            merkle.verify_inclusion(hashes[m], (m + 1) % n, n, proof, root)
    if cproof:
        i = data.draw(st.integers(0, len(cproof) - 1))
        bad = list(cproof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(ConsistencyProofInvalid):
            merkle.verify_consistency(old, n, old_root, root, bad)
        with pytest.raises(ConsistencyProofInvalid):
            merkle.verify_consistency(old, n, old_root, root, cproof + [root])


def test_rfc_known_answer() -> None:
    # Empty tree and the single-leaf tree (RFC 9162 2.1.1).
    assert merkle.root_of_leaf_hashes([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root_of_leaves([b""]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_bad_parameters() -> None:
    get = merkle.hashes_source([merkle.leaf_hash(b"x")] * 4)
    with pytest.raises(ProofUnavailable):
        merkle.inclusion_proof(4, 4, get)
    with pytest.raises(ProofUnavailable):
        merkle.inclusion_proof(-1, 4, get)
    with pytest.raises(ProofUnavailable):
        merkle.consistency_proof(5, 4, get)
    with pytest.raises(InclusionProofInvalid):
        merkle.verify_inclusion(b"\x00" * 32, 0, 0, [], b"\x00" * 32)
    with pytest.raises(ConsistencyProofInvalid):
        merkle.verify_consistency(2, 3, b"\x00" * 32, b"\x00" * 32, [])
    with pytest.raises(ConsistencyProofInvalid):
        merkle.verify_consistency(3, 2, b"\x00" * 32, b"\x00" * 32, [])
    with pytest.raises(ConsistencyProofInvalid):
        merkle.verify_consistency(3, 3, b"\x00" * 32, b"\x01" * 32, [])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 600), m=st.integers(0, 600))
def test_tree_builder_from_frontier(n: int, m: int) -> None:
    m = min(m, n)
    hashes = [merkle.leaf_hash(x) for x in _leaves(n)]
    subtrees = merkle.complete_subtrees(m)
    frontier = [merkle.root_of_leaf_hashes(hashes[i << lvl : (i + 1) << lvl]) for lvl, i in subtrees]
    b = merkle.TreeBuilder(m, frontier)
    assert b.root() == merkle.root_of_leaf_hashes(hashes[:m])
    for h in hashes[m:]:
        b.append(h)
    assert b.size == n and b.root() == merkle.root_of_leaf_hashes(hashes)
