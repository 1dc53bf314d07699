"""The log and the chain, for any certificate (DESIGN.md flow 3; RFC 9162, C2SP tlog-checkpoint).

A certificate's inclusion proof verifies against a checkpoint signed by the pinned log key. With a
chain, that checkpoint must be one anchored on chain (its root and note SHA-256 in an ``Anchored``
event), or consistent with one (an RFC 9162 consistency proof between the anchored tree and the
proof's tree). The anchor is found from the contract's own events: the smallest anchored size that
contains the leaf. Nothing here trusts the server: bundles and consistency proofs are fetched from
it (``Fetcher``) and then checked against the log key and the chain.

Steps added to the verdict: ``log_leaf``, ``log_inclusion``, ``anchor_contract``, ``anchor``. ``check_anchored``
runs the last two for any logged leaf (an integrity report's).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from ca_service.relying_party.revocation import Fetcher

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class Report(Protocol):
    def add(self, name: str, passed: bool, detail: str = "") -> bool: ...

    def note(self, name: str, state: str, detail: str) -> None: ...


class AnchorChain(Protocol):
    """What the check reads from the chain (``ca_service.anchor.chain.ChainClient.reader``)."""

    @property
    def chain_id(self) -> int: ...

    def head(self) -> int: ...

    def is_anchor_contract(self, address: str) -> bool: ...

    def anchored_events(self, address: str, from_block: int = 0) -> list[Any]: ...


@dataclass(frozen=True)
class LogTrust:
    """What a relying party pins: the log's note verifier key; optionally a chain and a contract.

    ``contract`` None means "ask the server which contract it anchors to" (reported as a warning:
    pin it to rule out a server that shows you a contract of its own)."""

    vkey: str
    chain: AnchorChain | None = None
    contract: str | None = None


def server_of(leaf: x509.Certificate) -> str | None:
    """The CA's base URL, from the OCSP URL in the certificate's AIA (``{base}/v1/ocsp``)."""
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        url = str(desc.access_location.value)
        if desc.access_method == x509.oid.AuthorityInformationAccessOID.OCSP and url.endswith("/v1/ocsp"):
            return url[: -len("/v1/ocsp")]
    return None


def _get_text(fetch: Fetcher, url: str) -> str:
    return fetch(url, None, None).decode("utf-8")


def check_transparency(report: Report, leaf: x509.Certificate, trust: LogTrust, *, fetch: Fetcher,
                       server: str | None = None, bundle_text: str | None = None,
                       log_index: int | None = None) -> bool:
    """Add the log and anchor steps for ``leaf`` to ``report``; True when every one passed.

    ``bundle_text``: a ``tlog-proof@v1`` bundle the caller holds; without one it is fetched from
    ``server`` (default: the CA named in the certificate), under the anchored checkpoint that covers
    the leaf when there is a chain. ``log_index``: the leaf's index as the certificate's EAR states it
    (signed by the CA), used to find the covering anchor before any proof is fetched.
    """
    from ca_service.ca.verify import check_log_proof

    server = server or server_of(leaf)
    serial = format(leaf.serial_number, "x")
    contract = events = None
    if trust.chain is not None:
        if (found := _contract_and_events(report, trust, fetch, server)) is None:
            return False
        contract, events = found
    if bundle_text is None:
        if server is None:
            return report.add("log_inclusion", False, "no proof given and the certificate names no CA server")
        url = f"{server}/v1/certificates/{serial}/proof"
        if events is not None and log_index is not None:
            covering = [e for e in events if e.size > log_index]
            if covering:
                url += f"?size={covering[0].size}"
        try:
            bundle_text = _get_text(fetch, url)
        except Exception as exc:  # the fetcher's transport or HTTP failure
            return report.add("log_inclusion", False, f"could not fetch the proof from {server}: {_why(exc)}")
    cp = check_log_proof(report, leaf, bundle_text, trust.vkey)  # type: ignore[arg-type]
    if cp is None:
        return False
    if trust.chain is None or events is None or contract is None:
        return True
    return _check_anchor(report, trust.chain, contract, events, cp, bundle_text, fetch, server)


def check_anchored(report: Report, trust: LogTrust, cp: Any, bundle_text: str, *, fetch: Fetcher,
                   server: str | None = None) -> bool:
    """The anchor steps for any logged leaf whose ``tlog-proof@v1`` bundle was already checked
    against the log key (``cp``: its checkpoint), e.g. an integrity report's (``ca-service integrity
    verify --rpc``): the contract, then the anchor of that checkpoint or one consistent with it, as for
    a certificate. True without a chain (nothing to check)."""
    if trust.chain is None:
        return True
    if (found := _contract_and_events(report, trust, fetch, server)) is None:
        return False
    contract, events = found
    return _check_anchor(report, trust.chain, contract, events, cp, bundle_text, fetch, server)


def _contract_and_events(report: Report, trust: LogTrust, fetch: Fetcher, server: str | None) -> Any:
    """The pinned (or found) contract and its Anchored events, or None once a step has failed."""
    assert trust.chain is not None
    contract = _contract(report, trust, fetch, server)
    if contract is None:
        return None
    events = _events(report, trust.chain, contract)
    if events is None:
        return None
    return contract, events


def _why(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    detail = getattr(exc, "detail", None)
    if code and detail:
        return f"[{code}] {detail}"
    resp = getattr(exc, "response", None)
    if resp is not None:
        try:
            doc = resp.json()
            return f"HTTP {resp.status_code} [{doc.get('code')}] {doc.get('detail')}"
        except ValueError:
            return f"HTTP {resp.status_code}"
    return type(exc).__name__


def _contract(report: Report, trust: LogTrust, fetch: Fetcher, server: str | None) -> str | None:
    from ca_service.errors import CAServiceError

    chain = trust.chain
    if chain is None:
        return None
    pinned = trust.contract is not None
    address = trust.contract
    try:
        if address is None:
            if server is None:
                report.add("anchor_contract", False, "no contract given (--contract) and no CA server to ask")
                return None
            try:
                doc = json.loads(_get_text(fetch, f"{server}/v1/anchors/latest"))
                address, chain_id = str(doc["contract"]), int(doc["chain_id"])
            except Exception as exc:
                report.add("anchor_contract", False, f"could not learn the anchor contract from {server}: "
                                                     f"{_why(exc)}")
                return None
            if chain_id != chain.chain_id:
                report.add("anchor_contract", False, f"{server} anchors on chain {chain_id}, the RPC is chain "
                                                     f"{chain.chain_id}")
                return None
        if not _ADDRESS.fullmatch(address):
            report.add("anchor_contract", False, f"{address[:60]!r} is not a contract address")
            return None
        genuine = chain.is_anchor_contract(address)
    except CAServiceError as exc:
        report.add("anchor_contract", False, f"[{exc.code}] {exc.detail}")
        return None
    if not genuine:
        report.add("anchor_contract", False, f"the code at {address} is not the CheckpointAnchor contract")
        return None
    if pinned:
        report.add("anchor_contract", True, f"{address} (pinned) holds the CheckpointAnchor code")
    else:
        report.note("anchor_contract", "warn", f"{address} holds the CheckpointAnchor code; learned from {server}, "
                                               "not pinned (pass --contract to pin it)")
    return address


def _events(report: Report, chain: AnchorChain, contract: str) -> list[Any] | None:
    from ca_service.errors import CAServiceError

    try:
        return chain.anchored_events(contract)
    except CAServiceError as exc:
        report.add("anchor", False, f"[{exc.code}] {exc.detail}")
        return None


def _check_anchor(report: Report, chain: AnchorChain, contract: str, events: list[Any], cp: Any,
                  bundle_text: str, fetch: Fetcher, server: str | None) -> bool:
    from ca_service.errors import CAServiceError, ConsistencyProofInvalid
    from ca_service.tlog import merkle
    from ca_service.tlog.bundle import ProofBundle

    index = ProofBundle.parse(bundle_text).index
    covering = [e for e in events if e.size > index]
    if not covering:
        newest = events[-1].size if events else 0
        return report.add("anchor", False, f"no anchor on {contract} covers leaf {index} yet (newest anchored "
                                           f"size {newest}); retry after the next anchor")
    # the proof's own checkpoint, if it was anchored, else the smallest anchor containing the leaf
    ev = next((e for e in covering if e.size == cp.size), covering[0])
    try:
        where = f"anchored in block {ev.block_number} ({chain.head() - ev.block_number + 1} confirmations)"
    except CAServiceError as exc:
        return report.add("anchor", False, f"[{exc.code}] {exc.detail}")
    note = bundle_text.partition("\n\n")[2]
    if ev.size == cp.size:
        ok = ev.root == cp.root_hash and ev.checkpoint_hash == hashlib.sha256(note.encode()).digest()
        return report.add("anchor", ok, f"the checkpoint of size {cp.size} is {where}" if ok else
                          f"the chain's anchor of size {ev.size} is not this checkpoint (root or note hash differ)")
    if server is None:
        return report.add("anchor", False, f"the anchor covering leaf {index} has size {ev.size}, the proof's "
                                           f"checkpoint {cp.size}: a consistency proof is needed and no CA server "
                                           "is known (--server)")
    # A consistency proof between the anchored tree and the proof's tree (RFC 9162 section 2.1.4),
    # fetched from the server, checked against the chain's root and the signed checkpoint's root.
    old, new = sorted((ev.size, cp.size))
    old_root, new_root = (ev.root, cp.root_hash) if ev.size < cp.size else (cp.root_hash, ev.root)
    try:
        doc = json.loads(_get_text(fetch, f"{server}/v1/log/proof/consistency?from={old}&to={new}"))
        hashes = [base64.b64decode(h, validate=True) for h in doc["hashes"]]
        merkle.verify_consistency(old, new, old_root, new_root, hashes)
    except ConsistencyProofInvalid as exc:
        return report.add("anchor", False, f"the checkpoint of size {cp.size} is NOT consistent with the anchor of "
                                           f"size {ev.size} on chain [{exc.code}]")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return report.add("anchor", False, f"bad consistency proof from {server}: {type(exc).__name__}")
    except Exception as exc:
        return report.add("anchor", False, f"could not fetch a consistency proof from {server}: {_why(exc)}")
    return report.add("anchor", True, f"the checkpoint of size {cp.size} is consistent (RFC 9162 proof, "
                                      f"{len(hashes)} hashes) with the checkpoint of size {ev.size} {where}")
