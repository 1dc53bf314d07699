"""``ca-service log verify|publish`` over a SQLite deployment, and over HTTP tiles."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import update

from ca_service.api import problems
from ca_service.api.v1.log import bp
from ca_service.cli import log as log_cli
from ca_service.config import Settings
from ca_service.db.models import Base, TlogEntry
from ca_service.services import log as log_service
from ca_service.services.container import Services
from ca_service.services.keys import ensure_fernet_keys
from ca_service.tlog.leaves import revocation_leaf
from ca_service.tlog.sequencer import append_leaf, append_leaves

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _leaf(i: int) -> bytes:
    return revocation_leaf(at=NOW, serial=format(i + 1, "x"), reason="superseded")


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Services:
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    monkeypatch.setenv("CA_SERVICE_HOME", str(tmp_path))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", url)
    monkeypatch.setenv("CA_SERVICE_LOG_ORIGIN", "audit.example/log")
    settings = Settings.from_env()
    ensure_fernet_keys(settings)
    svc = Services.create(settings)
    Base.metadata.create_all(svc.db.engine)
    with svc.db.transaction() as s:
        svc.keys.store(s, "log", Ed25519PrivateKey.generate(), None, NOW)
    return svc


def _run(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = CliRunner().invoke(log_cli.log, list(args))
    return r.exit_code, json.loads(r.stdout.strip().splitlines()[-1]) if "--json" in args else {}


def test_verify_full_trusted_and_kept(deployment: Services, tmp_path: Path) -> None:
    svc = deployment
    vkey = log_service.vkey(svc)
    with svc.db.transaction() as s:
        append_leaves(s, [_leaf(i) for i in range(300)])
    r = CliRunner().invoke(log_cli.log, ["publish"])
    assert r.exit_code == 0 and r.stdout.startswith("audit.example/log\n300\n")
    kept = tmp_path / "kept.note"
    kept.write_text(r.stdout)
    with svc.db.transaction() as s:
        append_leaves(s, [_leaf(i) for i in range(300, 530)])
    mid = log_service.publish_checkpoint(svc)
    assert mid is not None
    trusted = tmp_path / "trusted.note"
    trusted.write_text(mid.note)
    for i in range(530, 540):
        with svc.db.transaction() as s:
            append_leaf(s, _leaf(i))
    log_service.publish_checkpoint(svc)

    code, out = _run("verify", "--vkey", vkey, "--consistent-with", str(kept), "--json")
    assert code == 0 and out["size"] == 540 and out["entries_read"] == 540 and out["consistent_with"] == [300]
    assert out["leaf_types"] == {"revocation": 540}
    code, out = _run("verify", "--vkey", vkey, "--trusted", str(trusted), "--consistent-with", str(kept), "--json")
    assert code == 0 and out["from"] == 530 and out["entries_read"] == 10

    # A rewritten entry is found by a full re-read, and by a trusted-prefix check of stored hashes.
    with svc.db.transaction() as s:
        s.execute(update(TlogEntry).where(TlogEntry.idx == 7).values(leaf=_leaf(9999)))
    code, out = _run("verify", "--vkey", vkey, "--json")
    assert code == 1 and out["error"]["code"] == "log.inconsistent"
    # A checkpoint signed by another key is refused.
    other = log_service.NoteVerifier.from_public_key("audit.example/log", Ed25519PrivateKey.generate().public_key())
    code, out = _run("verify", "--vkey", other.vkey, "--json")
    assert code == 1 and out["error"]["code"] == "log.checkpoint_signature_invalid"


def test_verify_over_http_tiles(deployment: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = deployment
    with svc.db.transaction() as s:
        append_leaves(s, [_leaf(i) for i in range(600)])
    log_service.publish_checkpoint(svc)
    app = Flask("t")
    app.extensions["ca_service"] = svc
    problems.init_app(app)
    app.register_blueprint(bp)
    client = app.test_client()

    def fake_get(self: log_cli.HttpSource, path: str) -> bytes:
        r = client.get("/v1/log/" + path)
        assert r.status_code == 200, path
        return r.data

    monkeypatch.setattr(log_cli.HttpSource, "_get", fake_get)
    code, out = _run("verify", "--server", "http://ca.invalid", "--vkey", log_service.vkey(svc), "--json")
    assert code == 0 and out["size"] == 600
