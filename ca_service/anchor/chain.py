"""ChainClient: the anchor contract over web3.py, on any EVM JSON-RPC URL or the embedded chain.

Transactions are signed locally with the publisher key (``CA_SERVICE_CHAIN_PRIVATE_KEY``); the node
never holds it. Every web3 / RPC / transport exception is wrapped here into a :class:`ChainError`
leaf (``from exc``), so callers handle one family.

The embedded chain is web3's ``EthereumTesterProvider`` (py-evm), kept in ``CA_SERVICE_HOME``
(``anchor/embedded.py``): every process rebuilds it from the same blocks, so a contract and its
anchors survive across processes. It mines one block per transaction and cannot reorg. It is local
and proves nothing to a third party; it exists so that ``ca-service demo`` and development run with
nothing to start. ``ChainClient.in_process`` is a throwaway in-memory chain (tests, benchmarks).
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound
from web3.types import Wei

from ca_service.anchor import recursion_limit_kept
from ca_service.errors import (
    AnchorContractMissing,
    AnchorTransactionReverted,
    ChainError,
    ChainIdMismatch,
    ChainUnavailable,
    ConfigurationError,
)

ARTIFACT_PATH = Path(__file__).parent / "contracts" / "CheckpointAnchor.json"
EMBEDDED = "embedded"
T = TypeVar("T")


class InsecureEmbeddedChainWarning(UserWarning):
    """Anchors on the embedded chain are local (a file in CA_SERVICE_HOME) and prove nothing to anyone else."""


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str
    compiler_version: str

    deployed_bytecode: str = ""

    @classmethod
    def load(cls, path: Path = ARTIFACT_PATH) -> Artifact:
        doc = json.loads(path.read_text())
        return cls(abi=doc["abi"], bytecode=doc["bytecode"], compiler_version=doc["compiler"]["version"],
                   deployed_bytecode=doc.get("deployedBytecode", ""))


@cache
def artifact() -> Artifact:
    return Artifact.load()


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees, or a legacy gas price on chains without a base fee."""

    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None

    def bumped(self) -> Fees:
        """+12.5 % (rounded up, at least 1 wei): above the 10 % replacement floor of geth and Anvil."""

        def up(v: int | None) -> int | None:
            return None if v is None else v + max(1, -(-v // 8))

        return Fees(up(self.max_fee_per_gas), up(self.max_priority_fee_per_gas), up(self.gas_price))

    def as_tx(self) -> dict[str, int]:
        if self.gas_price is not None:
            return {"gasPrice": self.gas_price}
        if self.max_fee_per_gas is None or self.max_priority_fee_per_gas is None:
            raise ValueError("EIP-1559 fees need both the max fee and the priority fee")
        return {"maxFeePerGas": self.max_fee_per_gas, "maxPriorityFeePerGas": self.max_priority_fee_per_gas}

    def to_json(self) -> dict[str, int | None]:
        return {"max_fee": self.max_fee_per_gas, "priority_fee": self.max_priority_fee_per_gas,
                "gas_price": self.gas_price}

    @classmethod
    def from_json(cls, doc: dict[str, int | None]) -> Fees:
        return cls(doc.get("max_fee"), doc.get("priority_fee"), doc.get("gas_price"))


@dataclass(frozen=True)
class SignedTx:
    tx_hash: bytes
    raw: bytes
    nonce: int
    fees: Fees


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    block_number: int
    block_hash: bytes
    succeeded: bool
    gas_used: int


@dataclass(frozen=True)
class AnchoredState:
    size: int
    root: bytes
    checkpoint_hash: bytes


@dataclass(frozen=True)
class AnchorEvent:
    size: int
    root: bytes
    checkpoint_hash: bytes
    tx_hash: bytes
    block_number: int
    block_hash: bytes


@dataclass(frozen=True)
class Deployment:
    address: str
    tx_hash: bytes
    block_number: int
    block_hash: bytes


def _is_unreachable(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError)


class ChainClient:
    """The anchor contract's operations, one RPC endpoint, one publisher key."""

    def __init__(self, w3: Web3, account: LocalAccount, *, embedded: bool,
                 expected_chain_id: int | None = None, lock: Any = None) -> None:
        self.w3 = w3
        self.account = account
        self.embedded = embedded
        self._expected_chain_id = expected_chain_id
        self._chain_id: int | None = None
        # eth-tester is not thread safe; RPC users share a session. The kept embedded chain's lock
        # is its file's (anchor/embedded.py ChainFile): it also syncs with other processes.
        self._lock = lock if lock is not None else threading.RLock()
        self._contract = w3.eth.contract(abi=artifact().abi)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def connect(cls, rpc: str, *, private_key: str | None, chain_id: int | None = None,
                timeout: float = 10.0) -> ChainClient:
        """A client for ``rpc`` (http(s) URL, or ``embedded``). Nothing is contacted yet.

        Raises:
            ConfigurationError (``config.invalid``): no publisher key for an RPC chain, bad key.
        """
        if rpc == EMBEDDED:
            return cls.in_process(private_key=private_key)
        if not rpc.startswith(("http://", "https://")):
            raise ConfigurationError("CA_SERVICE_CHAIN_RPC must be 'embedded' or an http(s) URL")
        if not private_key:
            raise ConfigurationError("CA_SERVICE_CHAIN_PRIVATE_KEY is required for an RPC chain")
        # No retries inside web3: the worker owns backoff, and an outage must surface quickly.
        provider = HTTPProvider(rpc, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        return cls(Web3(provider), _account(private_key), embedded=False, expected_chain_id=chain_id)

    @classmethod
    def reader(cls, rpc: str, *, chain_id: int | None = None, timeout: float = 10.0) -> ChainClient:
        """A read-only client for relying parties: it holds a throwaway key and never sends."""
        if not rpc.startswith(("http://", "https://")):
            raise ConfigurationError("the chain RPC must be an http(s) URL")
        provider = HTTPProvider(rpc, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        return cls(Web3(provider), Account.create(), embedded=False, expected_chain_id=chain_id)

    @classmethod
    def in_process(cls, *, private_key: str | None = None) -> ChainClient:
        """A fresh throwaway in-process chain (py-evm), gone with the process (tests, benchmarks).
        The publisher is funded from the tester's account."""
        warnings.warn("the in-process chain is ephemeral: its anchors prove nothing to "
                      "third parties; use CA_SERVICE_CHAIN_RPC for a real chain",
                      InsecureEmbeddedChainWarning, stacklevel=2)
        with recursion_limit_kept():  # EthereumTesterProvider imports py-evm on first use
            w3 = Web3(EthereumTesterProvider())
        account = _account(private_key) if private_key else Account.create()
        client = cls(w3, account, embedded=True)
        client._fund()
        return client

    @classmethod
    def embedded_in(cls, home: Path, *, private_key: str | None = None, create: bool = True) -> ChainClient:
        """The embedded chain kept in ``home`` (``anchor/embedded.py``). ``create``: make the chain
        and the publisher key when missing and fund the publisher (the worker); otherwise a reader.

        Raises:
            EmbeddedChainGone (``anchor.chain_unavailable``): a reader and no chain in ``home``.
            EmbeddedChainInvalid (``anchor.embedded_chain_invalid``): the chain file does not rebuild.
        """
        from ca_service.anchor.embedded import chain_file, publisher_key

        warnings.warn("the embedded chain is local (kept in CA_SERVICE_HOME): its anchors prove nothing to "
                      "third parties; use CA_SERVICE_CHAIN_RPC for a real chain",
                      InsecureEmbeddedChainWarning, stacklevel=2)
        cf = chain_file(home, create=create)
        with cf:
            if not create:
                account = Account.create()  # a reader never sends
            else:
                account = _account(private_key or publisher_key(home))
            client = cls(Web3(cf.provider), account, embedded=True, lock=cf)
            if create:
                client._fund()
        return client

    def _fund(self) -> None:
        """Development chains only: give the publisher ether from the tester's first account."""
        def go() -> None:
            if self.w3.eth.get_balance(self.account.address) >= 10**20:
                return
            tx = self.w3.eth.send_transaction({"from": self.w3.eth.accounts[0], "to": self.account.address,
                                               "value": Wei(10**21)})
            self.w3.eth.wait_for_transaction_receipt(tx)

        self._rpc("fund", go)

    # --- plumbing -------------------------------------------------------------------------------

    def _rpc(self, what: str, fn: Callable[[], T]) -> T:
        """Run one RPC interaction; map every failure into a ChainError leaf."""
        try:
            with self._lock:
                return fn()
        except ChainError:
            raise
        except (ContractCustomError, ContractLogicError) as exc:
            raise AnchorTransactionReverted(f"{what}: the contract refused the call",
                                            reason=_revert_name(_reason(exc) + str(getattr(exc, "data", "")))
                                            ) from exc
        except Exception as exc:  # the IO boundary: one family out
            if _is_unreachable(exc):
                raise ChainUnavailable(f"{what}: chain RPC unreachable") from exc
            if "execution reverted" in _reason(exc) or "revert" in type(exc).__name__.lower():
                raise AnchorTransactionReverted(f"{what}: the contract refused the call",
                                                reason=_revert_name(_reason(exc))) from exc
            raise ChainError(f"{what}: chain RPC failed", reason=_reason(exc)) from exc

    @property
    def publisher(self) -> str:
        return str(self.account.address)

    @property
    def chain_id(self) -> int:
        """The node's chain id, checked once against the configured one.

        Raises:
            ChainIdMismatch (``anchor.chain_id_mismatch``), ChainUnavailable.
        """
        if self._chain_id is None:
            cid = int(self._rpc("chain id", lambda: self.w3.eth.chain_id))
            if self._expected_chain_id is not None and cid != self._expected_chain_id:
                raise ChainIdMismatch(f"node serves chain id {cid}, configured {self._expected_chain_id}",
                                      node=cid, configured=self._expected_chain_id)
            self._chain_id = cid
        return self._chain_id

    def genesis_hash(self) -> bytes:
        """Identifies the chain instance: a restarted embedded or dev chain has a new genesis."""
        return bytes(self._rpc("genesis", lambda: self.w3.eth.get_block(0)["hash"]))

    def head(self) -> int:
        return int(self._rpc("block number", lambda: self.w3.eth.block_number))

    def block_hash(self, number: int) -> bytes | None:
        def get() -> bytes | None:
            try:
                return bytes(self.w3.eth.get_block(number)["hash"])
            except Exception as exc:
                if type(exc).__name__ in ("BlockNotFound",):
                    return None
                raise

        return self._rpc("block", get)

    def finalized_block(self) -> int | None:
        """The ``finalized`` tag's block number, None where the chain has no such tag."""
        def get() -> int | None:
            try:
                return int(self.w3.eth.get_block("finalized")["number"])
            except Exception as exc:
                if _is_unreachable(exc):
                    raise
                return None

        return self._rpc("finalized block", get)

    def code_at(self, address: str) -> bytes:
        return bytes(self._rpc("code", lambda: self.w3.eth.get_code(Web3.to_checksum_address(address))))

    def nonce(self, block: str = "latest") -> int:
        return int(self._rpc("nonce", lambda: self.w3.eth.get_transaction_count(self.account.address,
                                                                                  cast(Any, block))))

    def fees(self) -> Fees:
        def get() -> Fees:
            base = self.w3.eth.get_block("latest").get("baseFeePerGas")
            if base is None:
                return Fees(gas_price=int(self.w3.eth.gas_price))
            try:
                tip = int(self.w3.eth.max_priority_fee)
            except Exception:
                tip = 10**9
            return Fees(max_fee_per_gas=2 * int(base) + tip, max_priority_fee_per_gas=tip)

        return self._rpc("fees", get)

    def mine(self, blocks: int = 1) -> None:
        """Development chains only (embedded, Anvil): mine empty blocks."""
        def go() -> None:
            if self.embedded:
                self.w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]
            else:
                self.w3.provider.make_request(cast(Any, "anvil_mine"), [hex(blocks)])

        self._rpc("mine", go)

    # --- contract -------------------------------------------------------------------------------

    def deploy(self, *, timeout: float = 120.0) -> Deployment:
        """Deploy CheckpointAnchor with this client's key as the publisher; waits for the receipt."""
        def go() -> Deployment:
            factory = self.w3.eth.contract(abi=artifact().abi, bytecode=artifact().bytecode)
            tx = factory.constructor(self.account.address).build_transaction({
                "from": self.account.address, "nonce": self.w3.eth.get_transaction_count(
                    self.account.address, "pending"), "chainId": self.chain_id, **self.fees().as_tx()})
            signed = self.account.sign_transaction(tx)
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
            rcpt = self.w3.eth.wait_for_transaction_receipt(signed.hash, timeout=timeout, poll_latency=0.2)
            if rcpt["status"] != 1 or not rcpt.get("contractAddress"):
                raise AnchorTransactionReverted("anchor contract deployment reverted")
            return Deployment(address=str(rcpt["contractAddress"]), tx_hash=bytes(signed.hash),
                              block_number=int(rcpt["blockNumber"]), block_hash=bytes(rcpt["blockHash"]))

        return self._rpc("deploy", go)

    def _at(self, address: str) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact().abi)

    def require_contract(self, address: str) -> None:
        """Raises AnchorContractMissing (``anchor.contract_missing``) when no code is at ``address``."""
        if not self.code_at(address):
            raise AnchorContractMissing(f"no contract code at {address} on chain {self.chain_id}")

    def latest(self, address: str) -> AnchoredState:
        size, root, chash = self._rpc("latest()", lambda: self._at(address).functions.latest().call())
        return AnchoredState(int(size), bytes(root), bytes(chash))

    def publisher_of(self, address: str) -> str:
        return str(self._rpc("publisher()", lambda: self._at(address).functions.publisher().call()))

    def estimate_anchor_gas(self, address: str, size: int, root: bytes, checkpoint_hash: bytes) -> int:
        """Raises AnchorTransactionReverted when the contract would refuse (size not growing...)."""
        fn = self._at(address).functions.anchor(size, root, checkpoint_hash)
        return int(self._rpc("estimate gas", lambda: fn.estimate_gas({"from": self.account.address})))

    def sign_anchor(self, address: str, size: int, root: bytes, checkpoint_hash: bytes, *,
                    nonce: int, fees: Fees, gas: int) -> SignedTx:
        """Sign locally; nothing is sent. The hash is known before broadcast (write-ahead)."""
        def go() -> SignedTx:
            fn = self._at(address).functions.anchor(size, root, checkpoint_hash)
            tx = fn.build_transaction({"from": self.account.address, "nonce": nonce, "gas": gas,
                                       "chainId": self.chain_id, **fees.as_tx()})
            signed = self.account.sign_transaction(tx)
            return SignedTx(bytes(signed.hash), bytes(signed.raw_transaction), nonce, fees)

        return self._rpc("sign anchor", go)

    def broadcast(self, raw: bytes) -> None:
        """Send a signed transaction; a node that already has it is not an error."""
        def go() -> None:
            try:
                self.w3.eth.send_raw_transaction(raw)
            except Exception as exc:
                if _is_unreachable(exc):
                    raise
                # Already pooled or already mined (a rebroadcast after a restart): not an error.
                try:
                    if self.w3.eth.get_transaction(cast(Any, Web3.keccak(raw))) is not None:
                        return
                except TransactionNotFound:
                    pass
                raise

        self._rpc("broadcast", go)

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        def go() -> Receipt | None:
            try:
                r = self.w3.eth.get_transaction_receipt(cast(Any, tx_hash))
            except TransactionNotFound:
                return None
            if r is None or r.get("blockNumber") is None:
                return None
            return Receipt(tx_hash, int(r["blockNumber"]), bytes(r["blockHash"]), r["status"] == 1,
                           int(r["gasUsed"]))

        return self._rpc("receipt", go)

    def transaction_known(self, tx_hash: bytes) -> bool:
        def go() -> bool:
            try:
                return self.w3.eth.get_transaction(cast(Any, tx_hash)) is not None
            except TransactionNotFound:
                return False

        return self._rpc("transaction", go)

    def is_anchor_contract(self, address: str) -> bool:
        """Whether the code at ``address`` is exactly this repository's CheckpointAnchor runtime code
        (only its publisher may anchor, and sizes only grow), so its events mean what they say."""
        want = artifact().deployed_bytecode.removeprefix("0x").lower()
        return bool(want) and self.code_at(address).hex() == want

    def anchored_events(self, address: str, from_block: int = 0) -> list[AnchorEvent]:
        """Every Anchored event of the contract on the canonical chain, by size."""
        def go() -> list[AnchorEvent]:
            event = self._at(address).events.Anchored()
            topic0 = "0x" + bytes(self.w3.keccak(text="Anchored(uint64,bytes32,bytes32)")).hex()
            logs = self.w3.eth.get_logs({"address": Web3.to_checksum_address(address), "fromBlock": from_block,
                                         "toBlock": "latest", "topics": [topic0]})
            out = []
            for log in logs:
                ev = event.process_log(log)
                out.append(AnchorEvent(int(ev["args"]["size"]), bytes(ev["args"]["root"]),
                                       bytes(ev["args"]["checkpointHash"]), bytes(log["transactionHash"]),
                                       int(log["blockNumber"]), bytes(log["blockHash"])))
            return sorted(out, key=lambda e: e.size)

        return self._rpc("get logs", go)

    def find_anchor_event(self, address: str, size: int, from_block: int = 0) -> AnchorEvent | None:
        """The canonical chain's Anchored event for ``size`` (at most one: sizes strictly grow)."""
        def go() -> AnchorEvent | None:
            event = self._at(address).events.Anchored()
            topic0 = "0x" + bytes(self.w3.keccak(text="Anchored(uint64,bytes32,bytes32)")).hex()
            logs = self.w3.eth.get_logs({
                "address": Web3.to_checksum_address(address), "fromBlock": from_block, "toBlock": "latest",
                "topics": [topic0, "0x" + size.to_bytes(32, "big").hex()]})
            for log in logs:
                ev = event.process_log(log)
                return AnchorEvent(int(ev["args"]["size"]), bytes(ev["args"]["root"]),
                                   bytes(ev["args"]["checkpointHash"]), bytes(log["transactionHash"]),
                                   int(log["blockNumber"]), bytes(log["blockHash"]))
            return None

        return self._rpc("get logs", go)


def _account(private_key: str) -> LocalAccount:
    try:
        return cast(LocalAccount, Account.from_key(private_key))
    except Exception as exc:
        raise ConfigurationError("CA_SERVICE_CHAIN_PRIVATE_KEY is not a valid secp256k1 key") from exc


def _reason(exc: BaseException) -> str:
    """A short reason from an RPC error, without request payloads (never the key: we sign locally)."""
    msg = getattr(exc, "message", None) or (exc.args[0] if exc.args else type(exc).__name__)
    if isinstance(msg, dict):
        msg = msg.get("message", type(exc).__name__)
    return str(msg)[:200]


@cache
def _error_selectors() -> dict[str, str]:
    out = {}
    for item in artifact().abi:
        if item["type"] == "error":
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            out[Web3.keccak(text=sig)[:4].hex().removeprefix("0x")] = item["name"]
    return out


def _revert_name(text: str) -> str:
    """Name the contract's custom error in a revert message (hex or Python-bytes rendering)."""
    low = text.lower()
    for selector, name in _error_selectors().items():
        raw = bytes.fromhex(selector)
        if selector in low or repr(raw)[2:-1].lower() in low:
            return name
    return text[:200]


_embedded_lock = threading.Lock()
_embedded: dict[tuple[Path, str | None, bool], ChainClient] = {}


def embedded_chain(home: Path, private_key: str | None = None) -> ChainClient:
    """The process-wide client of the embedded chain kept in ``home`` (made when missing)."""
    key = (Path(home).resolve(), private_key, True)
    with _embedded_lock:
        if key not in _embedded:
            _embedded[key] = ChainClient.embedded_in(home, private_key=private_key, create=True)
        return _embedded[key]


def existing_embedded_chain(home: Path) -> ChainClient | None:
    """A reader of the embedded chain kept in ``home``; None when there is none (never made, or gone).

    Raises:
        EmbeddedChainInvalid (``anchor.embedded_chain_invalid``): the chain file does not rebuild.
    """
    from ca_service.errors import EmbeddedChainGone

    key = (Path(home).resolve(), None, False)
    with _embedded_lock:
        if key not in _embedded:
            try:
                _embedded[key] = ChainClient.embedded_in(home, create=False)
            except EmbeddedChainGone:
                return None
        return _embedded[key]


def client_for(rpc: str, *, private_key: str | None, chain_id: int | None, home: Path) -> ChainClient:
    if rpc == EMBEDDED:
        return embedded_chain(home, private_key)
    return ChainClient.connect(rpc, private_key=private_key, chain_id=chain_id)
