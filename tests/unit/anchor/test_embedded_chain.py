"""The embedded chain kept in CA_SERVICE_HOME (anchor/embedded.py): two processes' views of one file
(two ChainFile instances lock like two processes: flock is per open file) share the contract, its
events and the block hashes; a torn last line is dropped; a tampered block is refused."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from ca_service.anchor.chain import ChainClient, InsecureEmbeddedChainWarning, existing_embedded_chain
from ca_service.anchor.embedded import CHAIN_FILE, ChainFile, chain_dir, publisher_key
from ca_service.errors import EmbeddedChainGone, EmbeddedChainInvalid

ROOT, CHASH = b"\x11" * 32, b"\x22" * 32


def _client(home: Path, *, create: bool = True) -> ChainClient:
    """A client on its own ChainFile: what another process would have."""
    cf = ChainFile(home, create=create)
    with cf:
        account = Account.from_key(publisher_key(home)) if create else Account.create()
        c = ChainClient(Web3(cf.provider), account, embedded=True, lock=cf)
        if create:
            c._fund()
    return c


def _anchor(c: ChainClient, address: str, size: int) -> None:
    gas = c.estimate_anchor_gas(address, size, ROOT, CHASH)
    signed = c.sign_anchor(address, size, ROOT, CHASH, nonce=c.nonce(), fees=c.fees(), gas=gas * 2)
    c.broadcast(signed.raw)


def test_two_processes_share_one_chain(tmp_path: Path) -> None:
    a = _client(tmp_path)
    d = a.deploy()
    _anchor(a, d.address, 3)
    b = _client(tmp_path)                        # the next process: rebuilt from the file
    assert b.publisher == a.publisher and b.is_anchor_contract(d.address)
    assert b.genesis_hash() == a.genesis_hash() and b.head() == a.head()
    assert b.block_hash(d.block_number) == d.block_hash
    _anchor(b, d.address, 7)                     # b mines; a imports b's block before its next call
    assert a.latest(d.address).size == 7
    assert [e.size for e in a.anchored_events(d.address)] == [3, 7]
    assert a.block_hash(a.head()) == b.block_hash(b.head())
    reader = _client(tmp_path, create=False)
    assert [e.size for e in reader.anchored_events(d.address)] == [3, 7]
    lines = (chain_dir(tmp_path) / CHAIN_FILE).read_text().splitlines()
    assert len(lines) == 1 + a.head() and json.loads(lines[0])["format"] == "ca-service/embedded-chain/1"


def test_torn_last_line_is_dropped_and_a_tampered_block_refused(tmp_path: Path) -> None:
    a = _client(tmp_path)
    d = a.deploy()
    head = a.head()
    path = chain_dir(tmp_path) / CHAIN_FILE
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"number": 99, "hash": "ab')  # a writer died mid-append
    assert _client(tmp_path, create=False).head() == head   # a reader ignores it
    b = _client(tmp_path)                                    # a writer drops it
    assert b.head() == head and path.read_bytes() == good and b.is_anchor_contract(d.address)

    lines = good.decode().splitlines(keepends=True)
    doc = json.loads(lines[-1])
    doc["rlp"] = doc["rlp"][:-4] + ("00" if doc["rlp"][-4:-2] != "00" else "01") + doc["rlp"][-2:]
    path.write_text("".join(lines[:-1]) + json.dumps(doc) + "\n")
    with pytest.raises(EmbeddedChainInvalid):
        _client(tmp_path, create=False)


def test_no_chain_is_gone_for_readers(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedChainGone):
        ChainFile(tmp_path, create=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureEmbeddedChainWarning)
        assert existing_embedded_chain(tmp_path) is None
    assert not chain_dir(tmp_path).exists()       # a reader makes nothing
