# ruff: noqa: F811  (pytest fixtures imported from anchor_fixtures)
"""Chain faults against a real Anvil node: a node restart that changes the genesis hash, a real
change of chain, reorgs deeper than the confirmation count (snapshot/revert at depths 1 and 4),
and a transaction stuck behind a nonce gap."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from ca_service.db.models.anchor import AnchorContract
from ca_service.errors import AnchorChainChanged
from tests.unit.anchor.fakes import ListSource, StepClock

from .anchor_fixtures import AnvilNode, anchor_db, anchored_sizes, anvil, client, worker  # noqa: F401
from .test_anchor_anvil import _assert_exactly_once, _drive, _rows

pytestmark = pytest.mark.anvil


def test_node_restart_with_a_new_genesis_hash_carries_on(anchor_db, anvil, tmp_path) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock)
    w.tick()
    source.publish(3)
    _drive(w, anvil)
    anvil.stop()
    anvil.start()  # from its state file
    # Anvil does not always report another genesis hash after a restart: make the record say so
    with anchor_db.transaction() as s:
        s.execute(update(AnchorContract).values(genesis_hash=b"\x01" * 32))
    w2 = worker(anchor_db, anvil, source, clock)
    source.publish(5)
    _drive(w2, anvil)
    with anchor_db.read() as s:
        (rec,) = s.scalars(select(AnchorContract))
    assert rec.retired_at is None and rec.genesis_hash == client(anvil).genesis_hash()
    _assert_exactly_once(anchor_db, anvil, w2, source)


def test_real_change_of_chain_is_refused_then_forgotten_on_command(anchor_db, anvil, tmp_path) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock)
    w.tick()
    source.publish(3)
    _drive(w, anvil)
    other = AnvilNode(tmp_path / "other")
    (tmp_path / "other").mkdir()
    other.start()  # a fresh chain with the same chain id
    try:
        w2 = worker(anchor_db, other, source, clock)
        r = w2.tick()
        assert r.action == "error" and r.detail.startswith(AnchorChainChanged.code)
        assert "forget-contract" in r.detail
        assert w2.forget_contract() is not None       # `ca-service anchor forget-contract --yes`
        assert w2.tick().action == "deployed"
        source.publish(4)
        _drive(w2, other)
        assert anchored_sizes(client(other), w2.contract().address) == {4: 1}
    finally:
        other.stop()


@pytest.mark.parametrize("confirmations", [0, 3])
def test_final_anchor_reorged_away_is_re_anchored(anchor_db, anvil, confirmations) -> None:
    """A revert of confirmations + 1 blocks (depth 1, then 4) takes away an anchor the worker had
    made final: the next tick sees it, the row stops being final, and it is anchored again."""
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock, confirmations=confirmations)
    w.tick()
    snap = anvil.rpc("evm_snapshot")
    head = client(anvil).head()
    source.publish(6)
    _drive(w, anvil)
    (row,) = _rows(anchor_db)
    assert row.state == "final" and client(anvil).head() - head == confirmations + 1
    assert anvil.rpc("evm_revert", snap) is True       # depth confirmations + 1
    r = w.tick()
    assert r.action == "reorg", r
    (row,) = _rows(anchor_db)
    assert row.state != "final" and row.final_at is None and row.reorgs == 1
    _drive(w, anvil)
    _assert_exactly_once(anchor_db, anvil, w, source)


def test_transaction_stuck_behind_a_nonce_gap_is_replaced(anchor_db, anvil) -> None:
    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock)
    w.tick()
    source.publish(2)
    _drive(w, anvil)
    publisher = client(anvil).publisher
    anvil.rpc("evm_setAutomine", False)
    source.publish(9)
    assert w.tick().action == "sent"
    (_, sent) = _rows(anchor_db)
    # an earlier nonce becomes free again (a dropped transaction): ours waits behind the gap forever
    anvil.rpc("anvil_setNonce", publisher, hex(sent.nonce - 1))
    anvil.rpc("evm_setAutomine", True)
    r = w.tick()
    assert r.action == "planned" and "nonce gap" in r.detail
    _drive(w, anvil)
    (_, row) = _rows(anchor_db)
    assert row.nonce == sent.nonce - 1 and row.state == "final"
    _assert_exactly_once(anchor_db, anvil, w, source)


def test_cli_anchor_once_anchors_now_and_says_what_it_waits_for(anvil, tmp_path) -> None:
    """`ca-service anchor --once` anchors the newest checkpoint now (`run --once` respects T), and
    on a real RPC it says what it waits for ("0 of 2 confirmations")."""
    import hashlib
    import json
    from datetime import UTC, datetime

    from click.testing import CliRunner

    from ca_service.cli.anchor import anchor
    from ca_service.config import Settings
    from ca_service.db.models import Base
    from ca_service.db.models.tlog import TlogCheckpoint
    from ca_service.services.container import Services

    from .anchor_fixtures import CHAIN_ID, DEV_KEY

    svc = Services.create(Settings(home=tmp_path, profile="insecure-dev", chain_rpc=anvil.url, chain_id=CHAIN_ID,
                                   chain_private_key=DEV_KEY, database_url=f"sqlite:///{tmp_path / 'ca.db'}"))
    Base.metadata.create_all(svc.db.engine)

    def publish(size: int) -> None:
        note = f"example.test/log\n{size}\nroot{size}\n\n— sig\n"
        with svc.db.transaction() as s:
            s.add(TlogCheckpoint(size=size, root_hash=hashlib.sha256(note.encode()).digest(), note=note,
                                 note_sha256=hashlib.sha256(note.encode()).hexdigest(), created_at=datetime.now(UTC)))

    def last(*args: str) -> dict:
        out = CliRunner().invoke(anchor, list(args), obj=svc)
        assert out.exit_code == 0, out.output
        return json.loads(out.output.splitlines()[-1])

    try:
        publish(3)
        r = last("--once")
        assert r["action"] == "waiting" and r["size"] == 3 and r["detail"] == "0 of 2 confirmations"
        anvil.rpc("anvil_mine", "0x2")
        assert last("run", "--once")["action"] == "final"
        publish(5)
        r = last("run", "--once")                      # T = 60 s has not passed: it waits
        assert r["action"] == "waiting" and "leaves pending" in r["detail"]
        r = last("--once")                             # now
        assert r["action"] == "waiting" and r["size"] == 5 and r["detail"] == "0 of 2 confirmations"
    finally:
        svc.close()


@pytest.mark.parametrize("ttl", [0.0, 1.0])
def test_api_never_serves_final_an_anchor_a_deep_reorg_took_away(anchor_db, anvil, tmp_path, ttl) -> None:
    """Between an evm_revert of depth 4 (confirmations 3) and the re-anchor, GET /v1/anchors,
    /v1/anchors/latest, the covering anchor of the proof route and the explorer never say final:
    the read side asks the chain (TTL 0: on every read; else at most ``ttl`` seconds after the revert).
    A chain that cannot be asked is not final either."""
    import time

    from ca_service.api.app import create_app
    from ca_service.config import Settings
    from ca_service.services.anchoring import anchor_covering
    from ca_service.services.container import Services

    from .anchor_fixtures import CHAIN_ID, DEV_KEY

    svc = Services.create(Settings(home=tmp_path, profile="insecure-dev", chain_rpc=anvil.url, chain_id=CHAIN_ID,
                                   chain_private_key=DEV_KEY, anchor_confirm_ttl_seconds=ttl,
                                   database_url=anchor_db.engine.url.render_as_string(hide_password=False)))
    http = create_app(services=svc).test_client()

    def served() -> set[str]:
        listed = http.get("/v1/anchors").get_json()["anchors"]
        latest = http.get("/v1/anchors/latest").get_json()      # 404 anchor.not_found: nothing final
        page = http.get("/anchors").get_data(as_text=True)
        covering = anchor_covering(svc, 0)
        states = {a["state"] for a in listed} | {latest.get("state", latest.get("code")),
                                                 covering.state if covering else "none"}
        assert ("badge final" in page) == ("final" in states), (page, states)
        return states

    source, clock = ListSource(), StepClock()
    w = worker(anchor_db, anvil, source, clock, confirmations=3)
    try:
        w.tick()
        snap = anvil.rpc("evm_snapshot")
        source.publish(6)
        _drive(w, anvil)
        first = http.get("/v1/anchors/latest").get_json()
        assert first["state"] == "final" and first["confirmed_at"] and first["detail"] is None
        assert served() == {"final"}
        assert anvil.rpc("evm_revert", snap) is True       # depth confirmations + 1: the anchor is gone
        reverted = time.monotonic()
        (row,) = _rows(anchor_db)
        assert row.state == "final"                        # the worker has not looked yet
        while time.monotonic() - reverted < ttl:           # within the TTL the cached answer may stand
            time.sleep(0.1)
        latest = http.get("/v1/anchors/latest").get_json()
        assert latest["state"] == "unconfirmed" and "not on the chain now" in latest["detail"], latest
        assert latest["confirmed_at"] >= first["confirmed_at"]  # when the chain last showed it
        assert "final" not in served()
        seen = []
        for _ in range(12):                                # the re-anchor: never final until it is again
            r = w.tick()
            seen.append(r.action)
            (row,) = _rows(anchor_db)
            states = served()
            assert "final" not in states or row.state == "final", (seen, states)
            if r.action == "final":
                break
            if r.action == "waiting":
                anvil.rpc("anvil_mine", "0x1")
        assert seen[0] == "reorg" and seen[-1] == "final", seen
        time.sleep(ttl)
        again = http.get("/v1/anchors/latest").get_json()
        assert again["state"] == "final" and again["confirmed_at"] > first["confirmed_at"], (first, again)
        assert anchored_sizes(client(anvil), again["contract"]) == {6: 1}
        anvil.stop()                                       # the chain cannot be asked: not final
        time.sleep(ttl)
        down = http.get("/v1/anchors/latest").get_json()
        assert down["state"] == "unconfirmed" and "anchor.chain_unavailable" in down["detail"], down
        assert down["confirmed_at"] is not None
    finally:
        svc.close()
