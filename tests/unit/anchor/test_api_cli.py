"""/v1/anchors and `ca-service anchor` on the embedded chain, reading the log's checkpoint table."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from ca_service.api.app import create_app
from ca_service.api.v1.anchors import anchor_for_log_index
from ca_service.cli.anchor import anchor
from ca_service.config import Settings
from ca_service.db.models import Base
from ca_service.db.models.tlog import TlogCheckpoint
from ca_service.services.container import Services


@pytest.fixture
def svc(tmp_path) -> Services:
    settings = Settings(home=tmp_path, profile="insecure-dev", chain_rpc="embedded",
                        database_url=f"sqlite:///{tmp_path / 'ca.db'}")
    services = Services.create(settings)
    Base.metadata.create_all(services.db.engine)
    yield services
    services.close()


def _publish(svc: Services, size: int) -> bytes:
    note = f"example.test/log\n{size}\nroot{size}\n\n— sig\n"
    root = hashlib.sha256(f"root{size}".encode()).digest()
    with svc.db.transaction() as s:
        s.add(TlogCheckpoint(size=size, root_hash=root, note=note,
                             note_sha256=hashlib.sha256(note.encode()).hexdigest(),
                             created_at=datetime.now(UTC)))
    return root


@pytest.mark.filterwarnings("ignore")
def test_cli_once_then_api(svc: Services) -> None:
    app = create_app(services=svc)
    http = app.test_client()
    assert http.get("/v1/anchors").get_json() == {"anchors": []}
    r = http.get("/v1/anchors/latest")
    assert r.status_code == 404 and r.get_json()["code"] == "anchor.not_found"

    runner = CliRunner()
    root = _publish(svc, 4)
    out = runner.invoke(anchor, ["--once"], obj=svc)
    assert out.exit_code == 0, out.output
    actions = [json.loads(line)["action"] for line in out.output.splitlines()]
    assert actions == ["deployed", "sent", "included", "final"]

    latest = http.get("/v1/anchors/latest").get_json()
    assert latest["size"] == 4 and latest["root"] == "0x" + root.hex()
    assert latest["tx_hash"].startswith("0x") and latest["block_number"] > 0
    assert set(latest) >= {"chain_id", "contract", "tx_hash", "block_number", "size", "root"}
    with app.app_context():
        assert anchor_for_log_index(3)["size"] == 4
        assert anchor_for_log_index(4) is None
    assert http.get("/v1/anchors?limit=0").status_code == 400
    assert http.get("/v1/anchors?limit=x").status_code == 400

    out = runner.invoke(anchor, ["run", "--once"], obj=svc)
    assert json.loads(out.output.splitlines()[-1])["action"] == "skipped"


@pytest.mark.filterwarnings("ignore")
def test_cli_deploy_is_idempotent(svc: Services) -> None:
    runner = CliRunner()
    first = json.loads(runner.invoke(anchor, ["deploy"], obj=svc).output)
    second = json.loads(runner.invoke(anchor, ["deploy"], obj=svc).output)
    assert first == second and first["contract"].startswith("0x")


@pytest.mark.filterwarnings("ignore")
def test_anchor_now_and_relying_party_check(svc: Services) -> None:
    from ca_service.services.anchoring import anchor_matches_chain, anchor_now, chain_for

    _publish(svc, 2)
    first = anchor_now(svc)
    assert first.size == 2 and first.state == "final"
    _publish(svc, 9)
    view = anchor_now(svc)
    assert view.size == 9
    chain = chain_for(svc)
    assert anchor_matches_chain(chain, view)
    forged = type(view)(**{**view.__dict__, "root": "0x" + "00" * 32})
    assert not anchor_matches_chain(chain, forged)
