"""docs/problems.md lists every problem code, generated from the error classes; each problem's
`type` resolves (against the API base) to a page describing its code."""

from __future__ import annotations

import ast
from pathlib import Path

from ca_service.api.problem_docs import ERROR_MODULES, catalogue, markdown

REPO = Path(__file__).resolve().parents[2]


def test_docs_page_is_generated_from_the_errors():
    page = (REPO / "docs" / "problems.md").read_text()
    assert page == markdown(), "docs/problems.md is stale: python -c 'from ca_service.api.problem_docs import markdown; print(markdown(), end=\"\")' > docs/problems.md"
    codes = {c for c, _, _ in catalogue()}
    assert {"service.database_unavailable", "log.origin_mismatch", "anchor.chain_changed", "internal"} <= codes


def test_error_classes_live_in_the_listed_modules():
    listed = {m.replace(".", "/") + ".py" for m in ERROR_MODULES}
    for path in (REPO / "ca_service").rglob("*.py"):
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text())
        defines_code = any(isinstance(n, ast.ClassDef) and any(
            isinstance(b, ast.Assign) and any(getattr(t, "id", "") == "code" for t in b.targets) for b in n.body)
            for n in ast.walk(tree))
        if defines_code and rel not in listed:
            raise AssertionError(f"{rel} defines a class with a `code`: add it to ERROR_MODULES")


def test_problem_type_resolves(client):
    resp = client.get("/v1/log/entries/999999999")
    body = resp.get_json()
    assert body["type"] == "/problems/" + body["code"]
    page = client.get(body["type"])
    assert page.status_code == 200 and page.get_json()["code"] == body["code"]
    listing = client.get("/problems")
    assert listing.mimetype == "text/markdown" and f"`{body['code']}`" in listing.get_data(as_text=True)
