"""A real Anvil node (npm @foundry-rs/anvil) on a free loopback port, and the anchor test databases."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from web3 import HTTPProvider, Web3

from ca_service.anchor.chain import ChainClient
from ca_service.anchor.worker import AnchorPolicy, AnchorWorker
from ca_service.db.models import Base
from ca_service.db.session import Database
from tests.integration.ports import free_port as _free_port
from tests.unit.anchor.fakes import ListSource, StepClock

REPO = Path(__file__).resolve().parents[2]
ANVIL = REPO / "node_modules" / ".bin" / "anvil"


def _anvil_executable() -> Path:
    """Anvil itself, from the platform package npm installed beside the wrapper. ``.bin/anvil`` is a
    node script that on SIGTERM signals its Anvil child and exits at once, without waiting for it: a
    ``stop()`` that waited on the wrapper returned while Anvil was still answering (and still writing
    ``--state``), so "the chain cannot be asked" was sometimes asked and answered, and a restart could
    meet the old process."""
    found = sorted((REPO / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    return found[0] if len(found) == 1 and os.access(found[0], os.X_OK) else ANVIL


SKIP_NO_ANVIL = "anvil is not installed: run `npm ci` at the repo root (@foundry-rs/anvil)"
PG_ENV = "CA_SERVICE_TEST_POSTGRES_URL"
CHAIN_ID = 31337
# Anvil's first well-known dev account (funded on every Anvil); never a real key.
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class AnvilNode:
    """One Anvil process; ``stop``/``start`` keep the chain through ``--state`` (an outage, not a wipe)."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = workdir / "anvil-state.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(_anvil_executable()), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(CHAIN_ID),
             "--state", str(self.state), "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 1}, exception_retry_configuration=None))
        for _ in range(200):
            try:
                if w3.eth.chain_id == CHAIN_ID:
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("anvil did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # Anvil dumps --state on exit
            self.proc.wait(10)
        self.proc = None

    def rpc(self, method: str, *params: Any) -> Any:
        w3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 5}, exception_retry_configuration=None))
        resp = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(resp["error"])
        return resp.get("result")


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    if not ANVIL.exists():
        pytest.skip(SKIP_NO_ANVIL)
    node = AnvilNode(tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def anchor_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'anchors.db'}")
        Base.metadata.create_all(db.engine)
        yield db
        db.dispose()
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is unset: no PostgreSQL to test against")
    name = f"ca_anchor_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(make_url(base).set(database=name).render_as_string(hide_password=False))
    Base.metadata.create_all(db.engine)
    try:
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def client(node: AnvilNode) -> ChainClient:
    return ChainClient.connect(node.url, private_key=DEV_KEY, chain_id=CHAIN_ID, timeout=2.0)


def worker(db: Database, node: AnvilNode, source: ListSource, clock: StepClock,
           **policy: Any) -> AnchorWorker:
    p = AnchorPolicy(**{"confirmations": 2, "interval_seconds": 0, "max_leaves": 1, **policy})
    return AnchorWorker(db, client(node), source, clock, p)


def anchored_sizes(chain: ChainClient, address: str) -> Counter[int]:
    """How many times each size appears in the canonical chain's Anchored events."""
    topic0 = "0x" + bytes(chain.w3.keccak(text="Anchored(uint64,bytes32,bytes32)")).hex()
    logs = chain.w3.eth.get_logs({"address": Web3.to_checksum_address(address), "fromBlock": 0,
                                  "toBlock": "latest", "topics": [topic0]})
    return Counter(int.from_bytes(bytes(log["topics"][1]), "big") for log in logs)
