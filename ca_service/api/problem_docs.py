"""The problem types: every stable ``code`` a problem document can carry, with its HTTP status and
title, generated from the error classes. Served at ``/problems`` (each problem's ``type`` is
``/problems/<code>``, a URI reference resolved against the API's base) and kept in
``docs/problems.md`` (a test checks the file matches)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from ca_service.errors import CAServiceError

# where CAServiceError leaves are defined (a test checks no other module defines one)
ERROR_MODULES = ("ca_service.errors", "ca_service.collateral.errors", "ca_service.api.app")
TYPE_PREFIX = "/problems/"


def _walk(cls: type[CAServiceError]) -> Iterator[type[CAServiceError]]:
    sub: type[CAServiceError]
    for sub in cls.__subclasses__():
        yield sub
        yield from _walk(sub)


def catalogue() -> list[tuple[str, int, str]]:
    """``(code, status, title)`` for every problem code, sorted by code."""
    from ca_service.api.problems import HTTP_CODES

    for name in ERROR_MODULES:
        importlib.import_module(name)
    found: dict[str, tuple[int, str]] = {CAServiceError.code: (CAServiceError.status, CAServiceError.title)}
    for cls in _walk(CAServiceError):
        if cls.__module__ in ERROR_MODULES:
            found.setdefault(cls.code, (cls.status, cls.title))
    for status, code in HTTP_CODES.items():
        found.setdefault(code, (status, code.split(".")[-1].replace("_", " ").capitalize()))
    found.setdefault("request.error", (400, "HTTP error"))
    found.setdefault("request.invalid_value", (400, "Invalid value"))
    found.setdefault("service.not_ready", (503, "Not ready"))
    return sorted((code, status, title) for code, (status, title) in found.items())


def markdown() -> str:
    lines = ["# Problem types", "",
             "Every error of the API is an RFC 9457 `application/problem+json` document whose `code` is",
             "one of these, and whose `type` is `/problems/<code>` (served by the API; this file is",
             "generated from `ca_service/errors.py` and checked by `tests/unit/test_problem_docs.py`).", "",
             "| code | HTTP status | title |", "|---|---|---|"]
    lines += [f"| <a id=\"{code}\"></a>`{code}` | {status} | {title} |" for code, status, title in catalogue()]
    return "\n".join(lines) + "\n"
