"""CheckpointAnchor on the embedded chain: who may anchor, sizes only grow, two-step rotation."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from web3 import Web3

from ca_service.anchor.chain import ChainClient, artifact
from ca_service.errors import AnchorTransactionReverted

ROOT = b"\x11" * 32
CHASH = b"\x22" * 32


def _anchor(chain: ChainClient, address: str, size: int, root: bytes = ROOT, chash: bytes = CHASH) -> int:
    gas = chain.estimate_anchor_gas(address, size, root, chash)
    signed = chain.sign_anchor(address, size, root, chash, nonce=chain.nonce(), fees=chain.fees(),
                               gas=gas * 2)
    chain.broadcast(signed.raw)
    receipt = chain.receipt(signed.tx_hash)
    assert receipt is not None and receipt.succeeded
    return receipt.gas_used


def _other(chain: ChainClient) -> ChainClient:
    acct = Account.create()
    chain.w3.eth.send_transaction({"from": chain.w3.eth.accounts[1], "to": acct.address, "value": 10**20})
    return ChainClient(chain.w3, acct, embedded=True)


def test_deploy_and_latest_starts_empty(embedded_chain: ChainClient) -> None:
    d = embedded_chain.deploy()
    assert embedded_chain.latest(d.address).size == 0
    assert embedded_chain.publisher_of(d.address) == embedded_chain.publisher


def test_anchor_records_latest_and_emits_event(embedded_chain: ChainClient) -> None:
    d = embedded_chain.deploy()
    _anchor(embedded_chain, d.address, 7)
    state = embedded_chain.latest(d.address)
    assert (state.size, state.root, state.checkpoint_hash) == (7, ROOT, CHASH)
    ev = embedded_chain.find_anchor_event(d.address, 7)
    assert ev is not None and (ev.size, ev.root, ev.checkpoint_hash) == (7, ROOT, CHASH)
    assert embedded_chain.find_anchor_event(d.address, 8) is None


@pytest.mark.parametrize("size", [7, 6, 0])
def test_size_must_strictly_grow(embedded_chain: ChainClient, size: int) -> None:
    d = embedded_chain.deploy()
    _anchor(embedded_chain, d.address, 7)
    with pytest.raises(AnchorTransactionReverted) as exc:
        embedded_chain.estimate_anchor_gas(d.address, size, ROOT, CHASH)
    assert exc.value.fields["reason"] == "SizeNotGrowing"


def test_only_publisher_anchors(embedded_chain: ChainClient) -> None:
    d = embedded_chain.deploy()
    with pytest.raises(AnchorTransactionReverted) as exc:
        _other(embedded_chain).estimate_anchor_gas(d.address, 1, ROOT, CHASH)
    assert exc.value.fields["reason"] == "NotPublisher"


def test_two_step_publisher_rotation(embedded_chain: ChainClient) -> None:
    d = embedded_chain.deploy()
    new = _other(embedded_chain)
    contract = embedded_chain.w3.eth.contract(address=Web3.to_checksum_address(d.address), abi=artifact().abi)

    def send(client: ChainClient, fn) -> dict:
        tx = fn.build_transaction({"from": client.publisher, "nonce": client.nonce(),
                                   "chainId": client.chain_id, "gas": 200_000, **client.fees().as_tx()})
        h = client.w3.eth.send_raw_transaction(client.account.sign_transaction(tx).raw_transaction)
        return client.w3.eth.wait_for_transaction_receipt(h)

    # A stranger can neither propose nor accept.
    with pytest.raises(AnchorTransactionReverted):
        new._rpc("x", lambda: contract.functions.proposePublisher(new.publisher).estimate_gas(
            {"from": new.publisher}))
    with pytest.raises(AnchorTransactionReverted):
        new._rpc("x", lambda: contract.functions.acceptPublisher().estimate_gas({"from": new.publisher}))
    r = send(embedded_chain, contract.functions.proposePublisher(new.publisher))
    assert contract.events.PublisherProposed().process_receipt(r)[0]["args"]["proposed"] == new.publisher
    # Proposed is not yet the publisher.
    assert embedded_chain.publisher_of(d.address) == embedded_chain.publisher
    r = send(new, contract.functions.acceptPublisher())
    assert contract.events.PublisherChanged().process_receipt(r)[0]["args"]["current"] == new.publisher
    assert embedded_chain.publisher_of(d.address) == new.publisher
    with pytest.raises(AnchorTransactionReverted):
        embedded_chain.estimate_anchor_gas(d.address, 1, ROOT, CHASH)
    _anchor(new, d.address, 1)


def test_gas_per_anchor(embedded_chain: ChainClient) -> None:
    """The plain anchor stays under the 60,000 gas target once slots are warm (first: fresh slots)."""
    d = embedded_chain.deploy()

    def fresh(n: int) -> tuple[bytes, bytes]:  # full-entropy, changing root and hash: worst calldata
        root = hashlib.sha256(n.to_bytes(8, "big")).digest()
        return root, hashlib.sha256(root).digest()

    first = _anchor(embedded_chain, d.address, 1, *fresh(1))
    steady = [_anchor(embedded_chain, d.address, n, *fresh(n)) for n in (2, 300, 70_000)]
    assert first < 80_000
    assert max(steady) < 60_000


def test_artifact_matches_abi_surface() -> None:
    names = {item.get("name") for item in artifact().abi}
    assert {"anchor", "latest", "proposePublisher", "acceptPublisher", "Anchored",
            "PublisherProposed", "PublisherChanged"} <= names
    assert artifact().compiler_version.startswith("0.8.37+")
