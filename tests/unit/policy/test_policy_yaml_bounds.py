"""Policy YAML: anchors and aliases (the "billion laughs" bomb) and deep nesting are refused before
anything builds or walks a tree."""

from __future__ import annotations

import pytest

from ca_service.errors import PolicyError
from ca_service.policy.model import load_policy

BOMB = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


def test_alias_bomb_is_refused() -> None:
    with pytest.raises(PolicyError, match="anchors or aliases"):
        load_policy(BOMB)


def test_a_single_anchor_is_refused() -> None:
    with pytest.raises(PolicyError, match="anchors or aliases"):
        load_policy("name: &n x\ndescription: *n\n")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(PolicyError, match="deeper than"):
        load_policy("[" * 40 + "]" * 40)
    with pytest.raises(PolicyError):  # libyaml stops it first (its own nesting cap), or the bound does
        load_policy("[" * 20_000)
    with pytest.raises(PolicyError, match="deeper than"):
        load_policy("".join(f"{' ' * i}k{i}:\n" for i in range(40)) + " " * 40 + "v: 1\n")
