"""RFC 9162 Merkle tree hashing, proofs and their verification (PURE: no IO).

Hashes follow RFC 9162 section 2.1.1: ``leaf = SHA-256(0x00 || data)``,
``node = SHA-256(0x01 || left || right)``, the empty tree hashes to ``SHA-256("")``.

Proof generation works over a :data:`SubtreeHashes` function that returns the hash of one
*complete*, aligned subtree: ``get(level, index)`` is ``MTH(D[index * 2**level : (index + 1) * 2**level])``.
A store that keeps complete-subtree hashes (C2SP tiles) answers each call with O(1) reads, so a
proof costs O(log n) reads and the tree is never recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from ca_service.errors import ConsistencyProofInvalid, InclusionProofInvalid, ProofUnavailable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHashes = Callable[[int, int], bytes]
"""``get(level, index)``: hash of the complete subtree of ``2**level`` leaves at ``index << level``."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 2.1.1: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, in O(n) time and O(log n) memory (a stack of complete subtrees)."""
    if not hashes:
        return EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing
    for h in hashes:
        level, cur = 0, h
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            cur = node_hash(left, cur)
            level += 1
        stack.append((level, cur))
    # Fold the complete subtrees right to left: RFC 9162's right subtree is the smaller one.
    _, acc = stack.pop()
    while stack:
        _, left = stack.pop()
        acc = node_hash(left, acc)
    return acc


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over raw leaf data."""
    return root_of_leaf_hashes([leaf_hash(x) for x in leaves])


def complete_subtrees(size: int) -> list[tuple[int, int]]:
    """The complete subtrees ``(level, index)`` a tree of ``size`` leaves decomposes into, left first."""
    out: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            out.append((level, start >> level))
            start += 1 << level
    return out


def subtree_hash(start: int, end: int, get: SubtreeHashes) -> bytes:
    """MTH(D[start:end]) for a range of the RFC 9162 recursion (start aligned to the split)."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return get(level, start >> level)
    k = _largest_power_of_two_below(n)
    return node_hash(subtree_hash(start, start + k, get), subtree_hash(start + k, end, get))


def tree_hash(size: int, get: SubtreeHashes) -> bytes:
    """The root of the first ``size`` leaves, from O(log size) complete-subtree hashes."""
    return subtree_hash(0, size, get)


def inclusion_proof(index: int, size: int, get: SubtreeHashes) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]), hashes ordered from the leaf up.

    Raises:
        ProofUnavailable (``log.proof_unavailable``): ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ProofUnavailable("index must be below the tree size", index=index, size=size)
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Iterate down the recursion, collecting siblings top-down; reverse at the end.
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            path.append(subtree_hash(start + k, end, get))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, get))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, get: SubtreeHashes) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true).

    Raises:
        ProofUnavailable (``log.proof_unavailable``): sizes out of order or negative.
    """
    if not 0 <= old_size <= new_size:
        raise ProofUnavailable("sizes must satisfy 0 <= from <= to", **{"from": old_size, "to": new_size})
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(subtree_hash(start, end, get))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(subtree_hash(start + k, end, get))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k, get))
            start, m, whole = start + k, m - k, False
    proof.reverse()
    return proof


def _eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2 steps 1-4: the root that ``proof`` implies for leaf hash ``leaf``.

    Raises:
        InclusionProofInvalid (``log.inclusion_proof_invalid``): malformed proof or parameters.
    """
    # (1) index must be inside the tree.
    if not 0 <= index < size:
        raise InclusionProofInvalid("index is not below the tree size", index=index, size=size)
    if any(len(p) != HASH_SIZE for p in proof) or len(leaf) != HASH_SIZE:
        raise InclusionProofInvalid("proof hashes must be 32 bytes")
    # (2) fn, sn, r
    fn, sn, r = index, size - 1, leaf
    # (3) walk the proof
    for p in proof:
        if sn == 0:
            raise InclusionProofInvalid("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # (4) sn must be 0
    if sn != 0:
        raise InclusionProofInvalid("proof is shorter than the tree is deep")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: check that leaf hash ``leaf`` is at ``index`` in the tree ``(size, root)``.

    Raises:
        InclusionProofInvalid (``log.inclusion_proof_invalid``): the proof does not verify.
    """
    if not _eq(root_from_inclusion_proof(leaf, index, size, proof), root):
        raise InclusionProofInvalid("inclusion proof does not lead to the root", index=index, size=size)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: check that tree ``(old_size, old_root)`` is a prefix of ``(new_size, new_root)``.

    Raises:
        ConsistencyProofInvalid (``log.consistency_proof_invalid``): the proof does not verify.
    """
    if not 0 <= old_size <= new_size:
        raise ConsistencyProofInvalid("sizes must satisfy 0 <= from <= to")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ConsistencyProofInvalid("proof hashes must be 32 bytes")
    if old_size == new_size:
        if proof or not _eq(old_root, new_root):
            raise ConsistencyProofInvalid("equal sizes need an empty proof and equal roots")
        return
    if old_size == 0:
        if proof:
            raise ConsistencyProofInvalid("a proof from the empty tree must be empty")
        return
    # (1) an empty path cannot prove anything between different sizes.
    if not proof:
        raise ConsistencyProofInvalid("empty consistency proof")
    path = list(proof)
    # (2) if first is an exact power of 2, prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # (3) fn, sn; (4) shift while LSB(fn) is set.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5)
    fr = sr = path[0]
    # (6)
    for c in path[1:]:
        if sn == 0:
            raise ConsistencyProofInvalid("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # (7)
    if sn != 0 or not _eq(fr, old_root) or not _eq(sr, new_root):
        raise ConsistencyProofInvalid(
            "consistency proof does not verify", **{"from": old_size, "to": new_size}
        )


def hashes_source(leaf_hashes: Sequence[bytes]) -> SubtreeHashes:
    """An in-memory :data:`SubtreeHashes` over a list of leaf hashes (tests, ``log verify``)."""
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(level: int, index: int) -> bytes:
        if level >= len(levels) or index >= len(levels[level]):
            raise ProofUnavailable("subtree is not complete in this tree", level=level, index=index)
        return levels[level][index]

    return get


class TreeBuilder:
    """Streaming RFC 9162 root: append leaf hashes one by one, O(log n) memory.

    Start from a *frontier* (the hashes of :func:`complete_subtrees` of a trusted tree, checked
    against its root with :meth:`root`) to extend a tree without re-reading its prefix.
    """

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        levels = [lvl for lvl, _ in complete_subtrees(size)]
        if len(levels) != len(frontier):
            raise ProofUnavailable("frontier does not match the tree size", size=size)
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(zip(levels, frontier, strict=True))

    def append(self, leaf_hash_: bytes) -> None:
        level, cur = 0, leaf_hash_
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            cur = node_hash(left, cur)
            level += 1
        self._stack.append((level, cur))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            acc = node_hash(left, acc)
        return acc
