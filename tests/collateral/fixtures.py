"""Fixtures for the collateral tests: a fresh CA database per module (the cache starts empty), the
offline bundle built from the real vectors, and helpers to compare verification outcomes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from tests.collateral.make_bundle import build_bundle


def fresh_services(tmp_path_factory: pytest.TempPathFactory, db_url_factory: Callable[[], str],
                   clock: Any = None) -> Any:
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory())
    init_ca(settings)
    return Services.create(settings, clock=clock)


@pytest.fixture(scope="module")
def bundle_entries() -> list[dict[str, Any]]:
    return build_bundle()


@pytest.fixture(scope="module")
def bundle_bytes(bundle_entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(bundle_entries).encode()


@pytest.fixture(scope="module")
def empty_services(tmp_path_factory: pytest.TempPathFactory, db_url_factory: Callable[[], str]) -> Iterator[Any]:
    svc = fresh_services(tmp_path_factory, db_url_factory)
    yield svc
    svc.close()


def outcome(kind: str, evidence: bytes, collateral: tuple[bytes, ...] | list[bytes], at: datetime) -> dict[str, Any]:
    """What a relying party sees: ok with status/advisories/key claims, or the refusal code."""
    try:
        r = verify(kind, evidence, collateral=collateral, at=at)
    except EvidenceError as exc:
        return {"ok": False, "code": exc.code}
    keep = ("fmspc", "tcb_evaluation_data_number", "tcb_date", "platform_tcb_status", "qe_tcb_status",
            "product", "reported_tcb", "measurement", "report_data")
    return {"ok": True, "tcb_status": r.tcb_status, "advisory_ids": list(r.advisory_ids),
            "claims": {k: r.claims.get(k) for k in keep}}
