"""Shared fixtures: a real database (SQLite by default, PostgreSQL when asked), an initialised CA.

The suite runs twice in CI: on SQLite, and with ``CA_SERVICE_TEST_DATABASE=postgres`` on a real
PostgreSQL (``CA_SERVICE_TEST_POSTGRES_URL``, default the local server), one fresh database per
CA fixture, dropped at the end.
"""

from __future__ import annotations

import base64
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def use_postgres() -> bool:
    return os.environ.get("CA_SERVICE_TEST_DATABASE", "sqlite") == "postgres"


# The PostgreSQL-only tests (log sequencing, anchors) read CA_SERVICE_TEST_POSTGRES_URL; a run asked
# to use PostgreSQL gives them the same server.
if use_postgres():
    os.environ.setdefault("CA_SERVICE_TEST_POSTGRES_URL", DEFAULT_PG)


# The suite sends hundreds of POSTs from one address, in process and to `ca-service serve`
# subprocesses (which inherit this): the per-client rate limit is off unless a test turns it on
# (tests/integration/test_rate_limit.py).
RATE_LIMIT_OFF = os.environ.setdefault("CA_SERVICE_RATE_LIMIT", "0")


# Hypothesis judges each example by its wall-clock time (200 ms by default) and fails a run whose data
# generation is slow (HealthCheck.too_slow): on a loaded 2-core CI box either fails a test that found
# nothing (DeadlineExceeded, then Flaky when the replay is fast). The suite's properties are about
# answers, not speed, so no example has a deadline; a failure prints the blob that reproduces it.
hypothesis_settings.register_profile("ca-service", deadline=None, print_blob=True,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.environ.get("CA_SERVICE_HYPOTHESIS_PROFILE", "ca-service"))


@pytest.fixture(scope="session")
def db_url_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    created: list[str] = []
    base = os.environ.get("CA_SERVICE_TEST_POSTGRES_URL", DEFAULT_PG)
    admin = create_engine(base, isolation_level="AUTOCOMMIT") if use_postgres() else None

    def make() -> str:
        if admin is None:
            return f"sqlite:///{tmp_path_factory.mktemp('db') / 'ca.db'}"
        name = f"ca_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    yield make
    if admin is not None:
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_settings(home: Path, db_url: str, **overrides: Any) -> Any:
    from ca_service.config import Settings

    overrides.setdefault("rate_limit_per_second", 0.0)  # see RATE_LIMIT_OFF below
    return Settings(home=home, profile=overrides.pop("profile", "insecure-dev"), database_url=db_url,
                    public_url=overrides.pop("public_url", "http://127.0.0.1:8080"), **overrides)


@pytest.fixture(scope="session")
def ca_settings(tmp_path_factory: pytest.TempPathFactory, db_url_factory: Callable[[], str]) -> Any:
    """An initialised insecure-dev CA shared by the session (tests must not assume it is empty)."""
    from ca_service.services.bootstrap import init_ca

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory())
    init_ca(settings)
    return settings


@pytest.fixture(scope="session")
def services(ca_settings: Any) -> Iterator[Any]:
    from ca_service.services.container import Services

    svc = Services.create(ca_settings)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def app(services: Any) -> Any:
    from ca_service.api.app import create_app

    return create_app(services=services)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="session")
def sim_tee(ca_settings: Any) -> Any:
    from ca_service.services.bootstrap import load_sim_tee

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_sim_tee(ca_settings)


class Issuer:
    """Builds issuance requests the way an agent does, with knobs to break each part."""

    def __init__(self, client: Any, tee: Any) -> None:
        self.client = client
        self.tee = tee

    def challenge(self) -> dict[str, Any]:
        resp = self.client.post("/v1/challenges")
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()

    def body(self, *, key: Any = None, dns: tuple[str, ...] = ("a.cvm.local",), policy: str = "sim",
             challenge: dict[str, Any] | None = None, report_data: bytes | None = None,
             evidence: bytes | None = None) -> tuple[dict[str, Any], Any]:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding

        from ca_service.agent.client import make_csr
        from ca_service.crypto.keys import spki_der
        from ca_service.evidence.binding import binding_value

        ch = challenge or self.challenge()
        key = key or ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key, dns).public_bytes(Encoding.PEM).decode()
        if evidence is None:
            rd = report_data if report_data is not None else binding_value(bytes.fromhex(ch["nonce"]),
                                                                           spki_der(key.public_key()))
            evidence = self.tee.report(rd)
        body = {"challenge_id": ch["id"], "csr": csr, "policy": policy,
                "evidence": [{"type": "sim", "data": base64.b64encode(evidence).decode()}]}
        return body, key

    def issue(self, **kw: Any) -> Any:
        body, _ = self.body(**kw)
        return self.client.post("/v1/certificates", json=body)


@pytest.fixture
def issuer(client: Any, sim_tee: Any) -> Issuer:
    return Issuer(client, sim_tee)


def certificate_count(services: Any) -> int:
    from sqlalchemy import func, select

    from ca_service.db.models import Certificate

    with services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Certificate)) or 0)
