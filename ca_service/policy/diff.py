"""Structural diff of two policy documents (PURE), for review before activation.

Paths are JSON Pointers (RFC 6901) into the normalised documents. Allow-lists (arrays of
scalars) are compared as sets, so a change reads "added X, removed Y" rather than as a reordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ca_service.policy.model import Policy


@dataclass(frozen=True)
class Change:
    """One difference: ``op`` is ``added``, ``removed`` or ``changed``."""

    path: str
    op: str
    before: Any = None
    after: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "op": self.op}
        if self.op != "added":
            out["before"] = self.before
        if self.op != "removed":
            out["after"] = self.after
        return out


def _pointer(parent: str, key: str) -> str:
    return f"{parent}/{key.replace('~', '~0').replace('/', '~1')}"


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str | int | bool) for v in value)


def _walk(path: str, a: Any, b: Any, out: list[Change]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            p = _pointer(path, key)
            if key not in b:
                out.append(Change(p, "removed", before=a[key]))
            elif key not in a:
                out.append(Change(p, "added", after=b[key]))
            else:
                _walk(p, a[key], b[key], out)
        return
    if _scalar_list(a) and _scalar_list(b):
        removed = [v for v in a if v not in b]
        added = [v for v in b if v not in a]
        for v in removed:
            out.append(Change(f"{path}/-", "removed", before=v))
        for v in added:
            out.append(Change(f"{path}/-", "added", after=v))
        return
    if a != b or type(a) is not type(b):
        out.append(Change(path or "/", "changed", before=a, after=b))


def diff_documents(before: dict[str, Any], after: dict[str, Any]) -> tuple[Change, ...]:
    """Every difference from ``before`` to ``after``, in path order."""
    out: list[Change] = []
    _walk("", before, after, out)
    return tuple(out)


def diff_policies(before: Policy, after: Policy) -> tuple[Change, ...]:
    """Differences between two policy versions; empty when their digests are equal."""
    if before.digest == after.digest:
        return ()
    return diff_documents(before.document, after.document)
