"""The log service and its HTTP API over SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import update

from ca_service.api import problems
from ca_service.api.v1.log import bp
from ca_service.clock import FixedClock
from ca_service.config import Settings
from ca_service.db.models import Base, TlogCheckpoint, TlogEntry
from ca_service.errors import LogInconsistent, NotCheckpointed
from ca_service.services import log as log_service
from ca_service.services.container import Services
from ca_service.services.keys import ensure_fernet_keys
from ca_service.tlog import merkle
from ca_service.tlog.bundle import ProofBundle
from ca_service.tlog.checkpoint import NoteVerifier, open_checkpoint
from ca_service.tlog.sequencer import append_leaf, append_leaves
from ca_service.tlog.tiles import decode_entry_bundle
from tests.integration.tlog_pg import pg_url  # noqa: F401  (fixture)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORIGIN = "ca.example/ca-service/log"


def _services(tmp_path: Path, url: str) -> Services:
    settings = Settings(home=tmp_path, database_url=url, log_origin=ORIGIN)
    ensure_fernet_keys(settings)
    svc = Services.create(settings, clock=FixedClock(NOW))
    Base.metadata.drop_all(svc.db.engine)
    Base.metadata.create_all(svc.db.engine)
    with svc.db.transaction() as s:
        svc.keys.store(s, "log", Ed25519PrivateKey.generate(), None, NOW)
    return svc


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ca.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = _services(tmp_path, url)
    yield s
    s.close()


@pytest.fixture
def client(svc: Services):  # type: ignore[no-untyped-def]
    app = Flask("test")
    app.extensions["ca_service"] = svc
    problems.init_app(app)
    app.register_blueprint(bp)
    return app.test_client()


def _leaf(i: int) -> bytes:
    return b'{"n":%d}' % i


def _fill(svc: Services, n: int) -> list[bytes]:
    leaves = [_leaf(i) for i in range(n)]
    with svc.db.transaction() as s:
        append_leaves(s, leaves[: n - 3])
    for x in leaves[n - 3 :]:
        with svc.db.transaction() as s:
            append_leaf(s, x)
    return leaves


def test_checkpoints_proofs_and_bundle(svc: Services, client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/v1/log/checkpoint").status_code == 404
    first = log_service.publish_checkpoint(svc)
    assert first is not None and first.size == 0 and first.root_hash == merkle.EMPTY_ROOT
    vkey = client.get("/v1/log/vkey").get_data(as_text=True).strip()
    verifier = NoteVerifier.from_vkey(vkey)
    leaves = _fill(svc, 600)
    cp_note = log_service.publish_checkpoint(svc)
    assert cp_note is not None
    again = log_service.publish_checkpoint(svc)
    assert again == cp_note  # nothing new: the same checkpoint, never a second one for a size
    r = client.get("/v1/log/checkpoint")
    assert r.status_code == 200 and r.content_type == "text/plain; charset=utf-8"
    cp = open_checkpoint(r.get_data(as_text=True), verifier, origin=ORIGIN)
    assert cp.size == 600 and cp.root_hash == merkle.root_of_leaves(leaves)

    for index in (0, 255, 256, 599):
        p = client.get(f"/v1/log/proof/inclusion?index={index}&size=600").get_json()
        assert set(p) == {"index", "size", "leaf_hash", "hashes"}
        hashes = [base64.b64decode(h) for h in p["hashes"]]
        assert base64.b64decode(p["leaf_hash"]) == merkle.leaf_hash(leaves[index])
        merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, 600, hashes, cp.root_hash)
        bundle = ProofBundle.parse(log_service.proof_bundle_for_index(svc, index))
        assert bundle.verify(leaves[index], verifier, ORIGIN) == cp
    for old in (1, 256, 300, 600):
        p = client.get(f"/v1/log/proof/consistency?from={old}&to=600").get_json()
        assert p["from"] == old and p["to"] == 600
        merkle.verify_consistency(
            old,
            600,
            merkle.root_of_leaves(leaves[:old]),
            cp.root_hash,
            [base64.b64decode(h) for h in p["hashes"]],
        )
    with svc.db.transaction() as s:
        append_leaf(s, _leaf(600))
    with pytest.raises(NotCheckpointed):
        log_service.proof_bundle_for_index(svc, 600)

    e = client.get("/v1/log/entries/599")
    assert e.status_code == 200 and base64.b64decode(e.get_json()["leaf"]) == leaves[599]


def test_tiles(svc: Services, client) -> None:  # type: ignore[no-untyped-def]
    leaves = _fill(svc, 600)
    hashes = [merkle.leaf_hash(x) for x in leaves]
    full = client.get("/v1/log/tile/0/001")
    assert full.status_code == 200 and full.data == b"".join(hashes[256:512])
    assert "immutable" in full.headers["Cache-Control"]
    part = client.get("/v1/log/tile/0/002.p/88")
    assert part.data == b"".join(hashes[512:600]) and "immutable" not in part.headers["Cache-Control"]
    assert client.get("/v1/log/tile/0/000.p/3").data == b"".join(hashes[:3])
    up = client.get("/v1/log/tile/1/000.p/2")
    assert up.data == merkle.root_of_leaf_hashes(hashes[:256]) + merkle.root_of_leaf_hashes(hashes[256:512])
    assert decode_entry_bundle(client.get("/v1/log/tile/entries/001").data) == leaves[256:512]
    assert decode_entry_bundle(client.get("/v1/log/tile/entries/002.p/88").data) == leaves[512:600]
    for missing in ("0/002", "0/002.p/89", "1/000", "1/000.p/3", "2/000.p/1", "entries/002", "0/x001/000"):
        r = client.get(f"/v1/log/tile/{missing}")
        assert r.status_code == 404 and r.get_json()["code"] == "log.tile_not_found", missing


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/log/proof/inclusion?index=5&size=5", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?index=0&size=11", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?index=-1&size=5", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?index=abc&size=5", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?size=5", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?index=0&size=99999999999999999999999", 400, "log.proof_unavailable"),
        ("/v1/log/proof/inclusion?index=0&size=9223372036854775807", 400, "log.proof_unavailable"),
        ("/v1/log/proof/consistency?from=6&to=5", 400, "log.proof_unavailable"),
        ("/v1/log/proof/consistency?from=1&to=11", 400, "log.proof_unavailable"),
        ("/v1/log/proof/consistency?from=1", 400, "log.proof_unavailable"),
        ("/v1/log/entries/10", 404, "log.entry_not_found"),
        ("/v1/log/entries/-1", 404, "log.entry_not_found"),
        ("/v1/log/entries/01", 404, "log.entry_not_found"),
        ("/v1/log/entries/9223372036854775808", 404, "log.entry_not_found"),
        ("/v1/log/entries/9223372036854775807", 404, "log.entry_not_found"),
        ("/v1/log/tile/0/0001", 400, "log.tile_path_invalid"),
        ("/v1/log/tile/0/x000/001", 400, "log.tile_path_invalid"),
        ("/v1/log/tile/99/000", 400, "log.tile_path_invalid"),
        ("/v1/log/tile/0/000.p/256", 400, "log.tile_path_invalid"),
        ("/v1/log/tile/garbage", 400, "log.tile_path_invalid"),
        ("/v1/log/tile/0/x999/x999/x999/x999/x999/x999/999", 404, "log.tile_not_found"),
    ],
)
def test_bad_input_is_4xx_problem(svc: Services, client, path: str, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    _fill(svc, 10)
    r = client.get(path)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.content_type == "application/problem+json"
    assert r.get_json()["code"] == code


def test_publisher_refuses_a_rewritten_log(svc: Services) -> None:
    _fill(svc, 20)
    assert log_service.publish_checkpoint(svc) is not None
    with svc.db.transaction() as s:
        s.execute(update(TlogEntry).where(TlogEntry.idx == 3).values(leaf_hash=b"\x00" * 32))
        append_leaf(s, _leaf(99))
    with pytest.raises(LogInconsistent):
        log_service.publish_checkpoint(svc)
    assert log_service.get_checkpoint(svc).size == 20


def test_background_publisher_and_concurrent_publishers(svc: Services) -> None:
    _fill(svc, 30)
    thread, stop = log_service.start_publisher(svc, interval=0.05, poll=0.02)
    others = [threading.Thread(target=log_service.publish_checkpoint, args=(svc,)) for _ in range(3)]
    try:
        for i in range(30, 60):
            with svc.db.transaction() as s:
                append_leaf(s, _leaf(i))
            if i == 45:
                for t in others:
                    t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with svc.db.read() as s:
                row = log_service.latest_checkpoint_row(s)
            if row is not None and row.size == 60:
                break
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
        for t in others:
            if t.is_alive():
                t.join(5)
    with svc.db.read() as s:
        rows = list(s.query(TlogCheckpoint).order_by(TlogCheckpoint.size))
    assert rows[-1].size == 60
    verifier = log_service.log_verifier(svc)
    prev = None
    for row in rows:
        cp = open_checkpoint(row.note, verifier, ORIGIN)
        assert cp.root_hash == row.root_hash == merkle.root_of_leaves([_leaf(i) for i in range(row.size)])
        assert prev is None or prev < row.size
        prev = row.size
