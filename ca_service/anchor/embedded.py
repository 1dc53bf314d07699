"""The embedded chain, kept in ``CA_SERVICE_HOME``: a py-evm chain whose blocks live in a file.

``$CA_SERVICE_HOME/chain/embedded-chain.jsonl``: a header line (format, genesis timestamp, genesis
hash, py-evm version), then one line per block ``{"number", "hash", "rlp"}``. A process rebuilds the
chain by importing every block into a fresh chain from the same genesis: py-evm executes each
block's transactions again and checks the result against the block, so the contract, its state,
its events, the block numbers and the block hashes are the same in every process, and a block that
does not import is refused (``anchor.embedded_chain_invalid``), never skipped.

Every use holds an exclusive ``flock`` on ``embedded-chain.lock``: on entry the blocks other
processes appended are imported; on exit the blocks this process mined are appended and fsynced.
So two ``ca-service anchor --once`` processes and ``serve`` share one chain. A torn last line (a
crash while appending) is dropped: that block is lost, as in a reorg of depth one, which the worker
handles (the signed transaction was written ahead in the database and is sent again).

The chain is still local: whoever holds the file can rewrite it, so its anchors prove nothing to a
third party. It makes the embedded default consistent across processes; a real chain
(``CA_SERVICE_CHAIN_RPC``) is what makes anchors evidence.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from importlib.metadata import version
from pathlib import Path
from types import TracebackType

import rlp

from ca_service.anchor import recursion_limit_kept
from ca_service.errors import EmbeddedChainGone, EmbeddedChainInvalid

with recursion_limit_kept():  # py-evm (eth/__init__.py) raises it to 12,288 when imported
    import eth  # noqa: F401
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import get_default_genesis_params
    from web3 import EthereumTesterProvider

FORMAT = "ca-service/embedded-chain/1"
CHAIN_DIR = "chain"
CHAIN_FILE = "embedded-chain.jsonl"
LOCK_FILE = "embedded-chain.lock"
KEY_FILE = "publisher.key"


def chain_dir(home: Path) -> Path:
    return Path(home) / CHAIN_DIR


def _backend(genesis_timestamp: int) -> PyEVMBackend:
    return PyEVMBackend(genesis_parameters=get_default_genesis_params({"timestamp": genesis_timestamp}))


def _genesis_hash(backend: PyEVMBackend) -> str:
    return bytes(backend.chain.get_canonical_block_header_by_number(0).hash).hex()


def _head(backend: PyEVMBackend) -> int:
    return int(backend.chain.get_canonical_head().block_number)


class ChainFile:
    """One process's view of the chain file; a reentrant context manager that syncs with it.

    ``create``: make the chain when there is none (the worker); readers (the API, a relying party
    with ``--rpc embedded``) never create, mine or write.
    """

    def __init__(self, home: Path, *, create: bool) -> None:
        self.dir = chain_dir(home)
        self.path = self.dir / CHAIN_FILE
        self.create = create
        if not self.path.exists() and not create:
            raise EmbeddedChainGone(f"no embedded chain in {self.dir}")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lockfd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        self._rlock = threading.RLock()
        self._depth = 0
        self._ino: int | None = None
        self._offset = 0
        self._persisted = 0
        self._backend: PyEVMBackend | None = None
        self.provider: EthereumTesterProvider | None = None
        with self:
            pass

    # --- the critical section -------------------------------------------------------------------

    def __enter__(self) -> ChainFile:
        self._rlock.acquire()
        self._depth += 1
        if self._depth == 1:
            try:
                self._reopen_lock()
                fcntl.flock(self._lockfd, fcntl.LOCK_EX)
                self._sync()
            except BaseException:
                fcntl.flock(self._lockfd, fcntl.LOCK_UN)
                self._depth -= 1
                self._rlock.release()
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._depth == 1:
                try:
                    self._persist()  # also after an error: what was mined is in memory and must be in the file
                finally:
                    fcntl.flock(self._lockfd, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._rlock.release()

    def _reopen_lock(self) -> None:
        """Lock the lock file that is in the directory now (a chain made anew has a new one)."""
        try:
            current = os.stat(self.dir / LOCK_FILE).st_ino
        except FileNotFoundError:
            if not self.create:
                raise EmbeddedChainGone(f"the embedded chain in {self.dir} is gone") from None
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            current = None
        if current != os.fstat(self._lockfd).st_ino:
            os.close(self._lockfd)
            self._lockfd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)

    # --- file <-> chain -------------------------------------------------------------------------

    def _sync(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self.create:
                raise EmbeddedChainGone(f"the embedded chain in {self.dir} is gone") from None
            self._new_chain()
            return
        try:
            if self._backend is None or st.st_ino != self._ino or st.st_size < self._offset:
                self._load_all()
            elif st.st_size > self._offset:
                self._import_from(self._offset)
        except EmbeddedChainInvalid:
            self._backend = None  # rebuild from the file next time, never go on from half an import
            raise

    def _install(self, backend: PyEVMBackend) -> None:
        self._backend = backend
        if self.provider is None:
            self.provider = EthereumTesterProvider(EthereumTester(backend))
        else:  # a chain file replaced under us: the same provider, the new chain
            self.provider.ethereum_tester = EthereumTester(backend)

    def _new_chain(self) -> None:
        ts = int(time.time())
        backend = _backend(ts)
        header = {"format": FORMAT, "genesis_timestamp": ts, "genesis_hash": _genesis_hash(backend),
                  "py_evm": version("py-evm")}
        data = (json.dumps(header, sort_keys=True) + "\n").encode()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._install(backend)
        self._ino, self._offset, self._persisted = os.stat(self.path).st_ino, len(data), 0

    def _load_all(self) -> None:
        with open(self.path, "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            first = f.readline()
            try:
                header = json.loads(first)
                ok = header.get("format") == FORMAT and isinstance(header.get("genesis_timestamp"), int)
            except ValueError:
                ok = False
            if not ok or not first.endswith(b"\n"):
                raise EmbeddedChainInvalid(f"{self.path} is not an embedded chain file ({FORMAT})")
            backend = _backend(header["genesis_timestamp"])
            if _genesis_hash(backend) != header.get("genesis_hash"):
                raise EmbeddedChainInvalid(
                    f"{self.path}: this py-evm ({version('py-evm')}) makes another genesis than the file's "
                    f"(py-evm {header.get('py_evm')}); its anchors cannot be rebuilt")
        self._backend, self._ino, self._offset, self._persisted = backend, ino, len(first), 0
        self._import_from(len(first))
        self._install(backend)

    def _import_from(self, offset: int) -> None:
        assert self._backend is not None  # noqa: S101  (set by _load_all / _new_chain before any import)
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data) and self.create:
            # a torn last line: a writer died while appending (it held the lock we hold now)
            os.truncate(self.path, offset + end)
        chain = self._backend.chain
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
                number = int(doc["number"])
                if number != self._persisted + 1:
                    raise ValueError(f"block {number} after block {self._persisted}")
                cls = chain.get_vm_class_for_block_number(number).get_block_class()
                block = rlp.decode(bytes.fromhex(doc["rlp"]), sedes=cls)
                chain.import_block(block)
                if bytes(block.hash).hex() != doc["hash"]:
                    raise ValueError(f"block {number} hashes to another value than recorded")
            except Exception as exc:  # a file we cannot rebuild is refused, never half-used
                raise EmbeddedChainInvalid(f"{self.path}: block line {self._persisted + 1} does not import "
                                           f"({type(exc).__name__})") from exc
            self._persisted = number
        self._offset = offset + end

    def _persist(self) -> None:
        if self._backend is None or not self.create:
            return
        head = _head(self._backend)
        if head <= self._persisted:
            return
        chain = self._backend.chain
        lines = []
        for n in range(self._persisted + 1, head + 1):
            block = chain.get_canonical_block_by_number(n)
            lines.append(json.dumps({"number": n, "hash": bytes(block.hash).hex(),
                                     "rlp": rlp.encode(block).hex()}) + "\n")
        data = "".join(lines).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._offset += len(data)
        self._persisted = head


_files_lock = threading.Lock()
_files: dict[tuple[Path, bool], ChainFile] = {}


def chain_file(home: Path, *, create: bool) -> ChainFile:
    """The process-wide ChainFile of ``home`` (a writer and a reader are separate instances).

    Raises:
        EmbeddedChainGone (``anchor.chain_unavailable``): ``create`` is False and there is no chain.
        EmbeddedChainInvalid (``anchor.embedded_chain_invalid``): the file does not rebuild.
    """
    key = (chain_dir(home).resolve(), create)
    with _files_lock:
        if key not in _files:
            _files[key] = ChainFile(home, create=create)
        return _files[key]


def publisher_key(home: Path) -> str:
    """The embedded chain's publisher key, made once and kept beside the chain (0600): every process
    anchors to the same contract with it. A dev key: the chain is local. Call it holding the chain's
    lock (``with chain_file(home, create=True):``), so that two processes make one key."""
    path = chain_dir(home) / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    from eth_account import Account

    chain_dir(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    key = "0x" + bytes(Account.create().key).hex()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key
