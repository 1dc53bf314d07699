"""Collateral the CA supplies itself: from the database cache, fetched from the vendors when online,
imported from offline bundles, refreshed before it expires (DESIGN.md "Evidence, collateral, trust roots").

This module only orchestrates: cache, fetch, verify, store (STYLE.md 16). It never reads evidence
itself. Which resources a piece of evidence needs is its family's answer (``evidence/needs.py``:
``needs_for``; the FMSPC and PCK CA of an Intel quote, the product line, chip id and reported TCB of
an SNP report, the certificates of a GPU's device chain); each need maps to one allowlisted endpoint
(``collateral/endpoints.endpoint_for``); the cached rows become what the verifier takes in
``collateral/assemble.py``. The evidence verifier then checks everything, including that the
collateral belongs to the evidence. Nothing the evidence says is trusted here, and no URL comes from it.

Online means a :class:`~ca_service.collateral.fetchers.Fetcher` is attached to the services
(:func:`attach_fetcher`) or passed in; without one the cache is all there is (air-gapped: fill it with
``ca-service collateral import``; online: ``ca-service collateral refresh`` on a timer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from ca_service.clock import require_aware
from ca_service.collateral import changes, endpoints
from ca_service.collateral.assemble import verifier_items
from ca_service.collateral.changes import Change
from ca_service.collateral.endpoints import Endpoint, Kind, endpoint_for
from ca_service.collateral.errors import FetchFailed, RollbackRefused
from ca_service.collateral.fetchers import Fetcher, Response, load_bundle
from ca_service.collateral.offered import nvidia_ocsp_responses, offered_responses
from ca_service.collateral.store import bodies, insert, newest_per_key, select_at
from ca_service.collateral.verify import issuer_chain_der, verify_response
from ca_service.db.lease import Fence
from ca_service.db.models.collateral import CollateralItem
from ca_service.errors import (
    CAServiceError,
    CollateralMissing,
    EvidenceError,
    EvidenceUnsupported,
    LeaseLost,
    RevocationUnchecked,
    revocation_error,
)
from ca_service.evidence import needs
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.needs import needs_for
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots
from ca_service.services.container import Services

if TYPE_CHECKING:
    from ca_service.services.collateral_bundles import Progress

log = logging.getLogger("ca_service.collateral")

SUPPLIED_KINDS = frozenset({"tdx-quote", "sgx-quote", "snp-report"})
# Refresh an item this long before its nextUpdate, when a fetcher is at hand (Intel publishes TCB Info
# and QE Identity for 30 days and CRLs for about as long: a day of margin keeps issuance off the edge).
REFRESH_MARGIN = timedelta(hours=24)


def refresh_margin(row: CollateralItem) -> timedelta:
    """How long before its nextUpdate an item is fetched again when a fetcher is at hand:
    :data:`REFRESH_MARGIN`, or half its validity when that is shorter (NVIDIA's OCSP answers live
    hours, not a month: they are asked again past half their window, not on every request)."""
    return min(REFRESH_MARGIN, (row.next_update - row.issue_date) / 2)


def attach_fetcher(svc: Services, fetcher: Fetcher | None) -> None:
    """Make ``svc`` online (a fetcher) or offline (None) for :func:`collateral_for`."""
    svc.collateral_fetcher = fetcher


def attached_fetcher(svc: Services) -> Fetcher | None:
    fetcher: Fetcher | None = svc.collateral_fetcher
    return fetcher


# --- cache access, fetching on miss ---------------------------------------------------------------------


def _chain_kind(kind: Kind) -> Kind:
    return Kind.VLEK_CHAIN if kind in (Kind.VLEK_CHAIN, Kind.VLEK_CRL) else Kind.VCEK_CHAIN


def _amd_chains(session: Session, ep: Endpoint) -> list[bytes]:
    if not ep.kind.value.startswith("amd.") or ep.kind in (Kind.VCEK_CHAIN, Kind.VLEK_CHAIN):
        return []
    return bodies(session, _chain_kind(ep.kind), ep.key.split("/", 1)[0])


def store_response(svc: Services, ep: Endpoint, resp: Response, roots: TrustRoots = DEFAULT_ROOTS,
                   fence: Fence | None = None) -> bool:
    """Verify one response and cache it in its own transaction; False if it was cached already.
    ``fence`` (the collateral duty's lease, db/lease.py) runs first in that transaction: a holder that
    lost the lease writes nothing.

    Raises:
        FetchFailed, RollbackRefused (``collateral.*``); EvidenceError leaves for a response that
        does not verify (``evidence.collateral_invalid``...); the fence's LeaseLost
        (``collateral.duty_lease_lost``).
    """
    with svc.db.transaction() as session:
        if fence is not None:
            fence(session)
        item = verify_response(ep, resp, roots, _amd_chains(session, ep))
        return insert(session, item, svc.clock.now())


def _with_cached_issuer_chain(svc: Services, ep: Endpoint) -> Endpoint:
    """An NVIDIA OCSP endpoint rebuilt from a URL (a refresh) gets the issuer chain its cached answers
    were verified with (an answer cannot be checked without its issuer)."""
    with svc.db.read() as session:
        row = select_at(session, ep.kind, ep.key, datetime.max.replace(tzinfo=UTC))
        headers = dict(row.headers) if row is not None else {}
    chain = issuer_chain_der(ep, Response(ep.url, 200, headers, b"", svc.clock.now()))
    return dataclasses.replace(ep, issuer_chain=chain)


def fetch_and_store(svc: Services, ep: Endpoint, fetcher: Fetcher, roots: TrustRoots = DEFAULT_ROOTS,
                    fence: Fence | None = None) -> bool:
    """GET one endpoint and cache the verified response (a VCEK or CRL needs its cert_chain first;
    an NVIDIA OCSP answer its issuer chain); ``fence`` as :func:`store_response`."""
    if ep.kind is Kind.NVIDIA_OCSP and not ep.issuer_chain:
        ep = _with_cached_issuer_chain(svc, ep)
    if ep.kind in (Kind.VCEK, Kind.VCEK_CRL, Kind.VLEK_CRL):
        product = ep.key.split("/", 1)[0]
        signer = "vlek" if ep.kind is Kind.VLEK_CRL else "vcek"
        with svc.db.read() as session:
            have_chain = bool(bodies(session, _chain_kind(ep.kind), product))
        if not have_chain:
            fetch_and_store(svc, endpoints.amd_cert_chain(product, signer), fetcher, roots, fence)
    return store_response(svc, ep, fetcher.fetch(ep), roots, fence)


@dataclass(frozen=True)
class CollateralUsed:
    """One collateral item an appraisal was judged by (docs/adr/0005-the-cas-collateral-decides.md).

    ``item`` is the cache kind (``intel.tcb_info.tdx``, ``amd.vcek_crl``...; ``request`` for a type the
    CA keeps no cache of), ``key`` its cache key (FMSPC, CA, product line...), ``sha256`` the digest of
    the item's bytes as cached (the vendor's response body), ``source`` where it came from for this
    appraisal: ``cache`` (held before the request), ``vendor`` (fetched for it), ``request`` (sent with
    the evidence, verified, and then cached). ``next_update`` bounds how long a judgement by it holds.
    """

    item: str
    key: str
    sha256: str
    source: str
    next_update: datetime | None
    issue_date: datetime | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat().replace("+00:00", "Z") if t is not None else None

        return {"item": self.item, "key": self.key, "sha256": self.sha256, "source": self.source,
                "issue_date": iso(self.issue_date), "next_update": iso(self.next_update), "url": self.url}


@dataclass(frozen=True)
class Resolved:
    """What the verifier of one evidence item is given, and the record of where each part came from."""

    items: tuple[bytes, ...]
    used: tuple[CollateralUsed, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [u.to_json() for u in self.used]

    @property
    def next_update(self) -> datetime | None:
        """The earliest nextUpdate of what was used (a judgement is no fresher than its oldest input)."""
        times = [u.next_update for u in self.used if u.next_update is not None]
        return min(times) if times else None


@dataclass
class _Lookup:
    svc: Services
    at: datetime
    fetcher: Fetcher | None
    roots: TrustRoots
    from_request: frozenset[str] = frozenset()
    used: list[CollateralUsed] = field(default_factory=list)

    def row(self, ep: Endpoint) -> CollateralItem:
        row, source = _row(self.svc, ep, self.at, self.fetcher, self.roots)
        if row.sha256 in self.from_request:
            source = "request"
        self.used.append(CollateralUsed(row.kind, row.key, row.sha256, source, row.next_update, row.issue_date,
                                        row.url))
        return row

    def revocation_row(self, ep: Endpoint) -> CollateralItem | None:
        """A CRL the CA holds (or fetches), or None: the verifier then reports the revocation source
        missing, and only the policy's rule may accept that (docs/revocation.md). Never an error here,
        so the refusal names the revocation item, not the cache."""
        try:
            return self.row(ep)
        except CAServiceError as exc:
            log.warning("no usable %s for %s: %s", ep.kind.value, ep.key or ep.url, exc.code)
            return None


def _row(svc: Services, ep: Endpoint, at: datetime, fetcher: Fetcher | None,
         roots: TrustRoots) -> tuple[CollateralItem, str]:
    with svc.db.read() as session:
        row = select_at(session, ep.kind, ep.key, at)
    source = "cache"
    if fetcher is not None and (row is None or row.next_update - refresh_margin(row) < at):
        try:
            fetch_and_store(svc, ep, fetcher, roots)
        except CAServiceError as exc:
            if row is None:
                raise
            # The cached item is still usable (the verifier checks its window): a vendor outage or a
            # refused rollback must not stop issuance, but must be visible.
            log.warning("collateral refresh of %s failed: %s", ep.url, exc.code)
        else:
            before = row.sha256 if row is not None else None
            with svc.db.read() as session:
                row = select_at(session, ep.kind, ep.key, at)
            if row is not None and row.sha256 != before:
                source = "vendor"
    if row is None:
        raise CollateralMissing(f"no cached {ep.kind.value} for {ep.key or ep.url}"
                                + ("" if fetcher else " and no collateral fetcher is configured"), url=ep.url,
                                item=ep.kind.value)
    return row, source


# --- the CA's collateral for a family's needs -------------------------------------------------------------


def _pick(look: _Lookup, alternatives: needs.Alternatives) -> list[tuple[needs.Need, CollateralItem | None]]:
    """The cached row for every need of the first alternative the CA holds (or fetches) whole; a
    revocation source it cannot get is None (the verifier reports it missing for the policy's rule to
    judge, docs/revocation.md). KDS answers 404 for another product line: the next alternative is tried.

    Raises:
        CollateralMissing, FetchFailed: the first alternative's missing item, when none is whole.
    """
    first: CAServiceError | None = None
    for alternative in alternatives:
        mark = len(look.used)
        try:
            return [(need, look.revocation_row(ep) if isinstance(need, needs.REVOCATION_NEEDS) else look.row(ep))
                    for need, ep in ((n, endpoint_for(n)) for n in needs.served(alternative))]
        except (CollateralMissing, FetchFailed) as exc:
            del look.used[mark:]
            first = first or exc
    raise first or CollateralMissing("no collateral is needed for this evidence")


def _take_offered(svc: Services, kind: str, offered: tuple[bytes, ...], roots: TrustRoots) -> frozenset[str]:
    """Verify the request's collateral like vendor responses and cache it; the digests it added.

    An item the cache already holds is not verified again; one older than the cache's TCB evaluation
    data number is left out (the CA's newer item decides); one that does not verify is a refusal.
    """
    pairs, _ = offered_responses(kind, offered, svc.clock.now())
    pairs.sort(key=lambda pair: _rank(pair[0]))  # a VCEK or CRL is checked against its cert_chain
    added: set[str] = set()
    for ep, resp in pairs:
        digest = hashlib.sha256(resp.body).hexdigest()
        if _held(svc, ep, digest):
            continue
        try:
            if store_response(svc, ep, resp, roots):
                added.add(digest)
        except RollbackRefused:
            continue
        except EvidenceError as exc:
            if ep.kind in _REVOCATION_ITEM and not isinstance(exc, RevocationUnchecked):
                raise _crl_refusal(ep, resp.body, exc) from exc
            raise
    return frozenset(added)


# the revocation item (errors.REVOCATION_ITEMS) each cached CRL kind is
_REVOCATION_ITEM = {Kind.PCK_CRL: "intel_pck_crl", Kind.ROOT_CA_CRL: "intel_root_ca_crl",
                    Kind.VCEK_CRL: "amd_crl", Kind.VLEK_CRL: "amd_crl"}


def _crl_refusal(ep: Endpoint, body: bytes, exc: EvidenceError) -> RevocationUnchecked:
    """A CRL the request sent that does not verify, refused with the revocation code naming it:
    ``invalid`` when it is no CRL, ``bad_signature`` when it is one the pinned issuer did not sign."""
    item = _REVOCATION_ITEM[ep.kind]
    try:
        crl = x509.load_der_x509_crl(body)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
        state = "bad_signature"
    except Exception:  # noqa: BLE001 - pyca parses lazily: any failure means it is no CRL
        state = "invalid"
    return revocation_error(item, state)(f"the request's {ep.kind.value}: {exc.detail}", item=item, state=state)


def resolve_collateral(svc: Services, kind: str, evidence_bytes: bytes, at: datetime, *,
                       offered: tuple[bytes, ...] = (), fetcher: Fetcher | None = None,
                       roots: TrustRoots = DEFAULT_ROOTS) -> Resolved:
    """The collateral the CA judges ``evidence_bytes`` by, as of ``at``, and where each item came from.

    TDX, SGX, SNP (VCEK): the CA's own: cached, or fetched when online; ``offered`` (what the request
    sent) only fills what the cache lacks, after full verification (:func:`_take_offered`), and never
    displaces a newer cached item (the cache's selection: higher tcbEvaluationDataNumber, then later
    issue date / thisUpdate). Other types (NVIDIA, Nitro, sim): the CA keeps no cache of them; the
    request's items go to the verifier and are recorded with source ``request``. NVIDIA: the device
    chain and RIMs come with the request; the OCSP answers for the chain are the CA's own, like the
    CRLs (:func:`_nvidia`).

    Raises:
        CollateralMissing (``evidence.collateral_missing``, ``item`` names the kind): not cached, not
            fetchable and not sent. EvidenceError leaves for sent collateral that does not verify.
        FetchFailed, EvidenceMalformed / EvidenceUnsupported: as :func:`collateral_for`.
    """
    at = require_aware(at)
    fetcher = fetcher if fetcher is not None else attached_fetcher(svc)
    if kind == "nvidia-gpu":
        return _nvidia(svc, evidence_bytes, at, offered, fetcher, roots)
    if kind not in SUPPLIED_KINDS:
        return _as_sent(offered)
    alternatives = needs_for(kind, evidence_bytes, offered, roots)
    if any(isinstance(n, needs.Sent) for alt in alternatives for n in alt):
        # AMD KDS publishes no VLEKs: a VLEK report is judged by what it was sent with (the verifier
        # checks it to the pinned ARK). KDS does publish the ARK's VLEK CRL: the CA adds its own, so
        # revocation does not depend on the requester sending one (the newest CRL decides).
        offered_responses(kind, offered, svc.clock.now())  # a sent CRL that is no ARK's CRL is refused here
        digests = load_collateral(offered, keep_unparsed_crls=True).digests()
        look = _Lookup(svc, at, fetcher, roots)
        added = verifier_items("sent", _pick(look, alternatives))
        return Resolved(offered + added, tuple(CollateralUsed("request", label, d, "request", None)
                                               for label, d in digests.items()) + tuple(look.used))
    from_request = _take_offered(svc, kind, offered, roots) if offered else frozenset()
    look = _Lookup(svc, at, fetcher, roots, from_request)
    out = verifier_items(kind, _pick(look, alternatives))
    _keep_for_dry_runs(svc, out)
    return Resolved(out, tuple(look.used))


def _as_sent(offered: tuple[bytes, ...]) -> Resolved:
    digests = load_collateral(offered).digests() if offered else {}
    return Resolved(offered, tuple(CollateralUsed("request", label, d, "request", None)
                                   for label, d in digests.items()))


def _nvidia(svc: Services, evidence: bytes, at: datetime, offered: tuple[bytes, ...], fetcher: Fetcher | None,
            roots: TrustRoots) -> Resolved:
    """NVIDIA's OCSP answers for the device chain, from the CA's cache (fetched when online), beside the
    device chain and RIMs the request sent (issue 11 sections 1 and 2).

    The chain's needs (``evidence/nvidia/needs.py``) name one answer per certificate. An answer the
    request sends fills what the cache lacks: it is verified like a vendor answer and cached (source
    ``request``), and it never displaces a newer cached one (the cache's selection: latest thisUpdate
    issued by ``at``). One that does not verify goes to the verifier as sent, which names its state
    (``revocation.nvidia_ocsp_<state>``) unless a good answer decides. A chain that does not build is
    the verifier's to refuse: then everything goes as sent.
    """
    try:
        (alternative,) = needs_for("nvidia-gpu", evidence, offered, roots)
    except EvidenceError:
        return _as_sent(offered)
    eps = [endpoint_for(n) for n in needs.served(alternative)]  # RIMs: the request's
    pairs, rest = nvidia_ocsp_responses(eps, offered, svc.clock.now())
    added: set[str] = set()
    unverified: list[bytes] = []
    for ep, resp in pairs:
        digest = hashlib.sha256(resp.body).hexdigest()
        if _held(svc, ep, digest):
            continue
        try:
            if store_response(svc, ep, resp, roots):
                added.add(digest)
        except CAServiceError as exc:
            log.info("the request's %s for %s does not verify: %s", ep.kind.value, ep.key, exc.code)
            unverified.append(resp.body)
    look = _Lookup(svc, at, fetcher, roots, frozenset(added))
    answers = tuple(row.body for ep in eps if (row := look.revocation_row(ep)) is not None)
    _keep_for_dry_runs(svc, answers)
    sent = _as_sent(tuple(rest) + tuple(unverified))
    return Resolved(sent.items + answers, sent.used + tuple(look.used))


def collateral_for(svc: Services, kind: str, evidence_bytes: bytes, at: datetime, *,
                   fetcher: Fetcher | None = None, roots: TrustRoots = DEFAULT_ROOTS) -> tuple[bytes, ...]:
    """Collateral items the verifier of ``kind`` accepts for this evidence, as of ``at``.

    Intel (tdx-quote, sgx-quote): one QuoteCollateralV3 JSON document. SNP (snp-report, VCEK-signed):
    VCEK DER, ASK+ARK PEM, CRL DER. From the cache; fetched on a miss (or within
    :data:`REFRESH_MARGIN` of nextUpdate) when a fetcher is given or attached.

    Raises:
        CollateralMissing (``evidence.collateral_missing``): not cached and not fetchable.
        EvidenceMalformed / EvidenceUnsupported: the evidence cannot be parsed far enough.
        FetchFailed, RollbackRefused (``collateral.*``), EvidenceError leaves: a fetched response
            that is refused, when nothing usable is cached.
    """
    if kind not in SUPPLIED_KINDS:
        raise EvidenceUnsupported(f"the CA supplies no collateral for {kind!r}: send it with the evidence")
    return resolve_collateral(svc, kind, evidence_bytes, at, fetcher=fetcher, roots=roots).items


# --- blobs for policy dry runs -----------------------------------------------------------------------------

_KEPT: set[tuple[str, str]] = set()
_KEPT_LOCK = threading.Lock()


def _blob_items(items: Iterable[bytes]) -> list[bytes]:
    """As issuance keeps them: each item, and every certificate and CRL in it as DER (the verifier
    records digests of those, and a dry run looks collateral up by them)."""
    out: list[bytes] = []
    for item in items:
        out.append(item)
        if item.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
            out += [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(item)]
    return out


def _keep_for_dry_runs(svc: Services, items: tuple[bytes, ...]) -> None:
    """Store supplied collateral as evidence blobs, once per process and content, so a policy dry run
    can verify the evidence again with it (collateral is public vendor data: keeping it early is harmless)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from ca_service.db.models import EvidenceBlob

    rows: dict[str, dict[str, Any]] = {}
    for data in _blob_items(items):
        digest = hashlib.sha256(data).hexdigest()
        if (svc.db.url, digest) not in _KEPT:
            rows[digest] = {"sha256": digest, "kind": "collateral", "data": data, "created_at": svc.clock.now()}
    if not rows:
        return
    with svc.db.transaction() as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(dialect.insert(EvidenceBlob).on_conflict_do_nothing(index_elements=["sha256"]),
                        list(rows.values()))
    with _KEPT_LOCK:
        if len(_KEPT) > 4096:
            _KEPT.clear()
        _KEPT.update((svc.db.url, d) for d in rows)


# --- offline bundles and refresh ---------------------------------------------------------------------------


def _rank(ep: Endpoint) -> int:
    # A VCEK or an AMD CRL is checked against a cert_chain: those go first.
    return 1 if ep.kind in (Kind.VCEK, Kind.VCEK_CRL, Kind.VLEK_CRL) else 0


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    already_cached: list[str] = field(default_factory=list)
    # resources whose new items can change a verdict (collateral/changes.py): what re-appraisal looks at
    changed: list[Change] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "already_cached": self.already_cached,
                "changed": [c.to_json() for c in self.changed]}


def _held(svc: Services, ep: Endpoint, digest: str) -> bool:
    """Whether the cache already holds a response with this body SHA-256 for the endpoint's resource."""
    with svc.db.read() as session:
        return any(hashlib.sha256(b).hexdigest() == digest for b in bodies(session, ep.kind, ep.key))


def import_bundle(svc: Services, data: bytes, roots: TrustRoots = DEFAULT_ROOTS,
                  progress: Progress | None = None) -> ImportResult:
    """Import an offline bundle: every item verified, all or nothing (one transaction).
    ``progress(url)`` is called after each item is verified and stored (the CLI's progress bar).

    Raises:
        BundleInvalid, HostNotAllowed, UrlNotAllowed, FetchFailed (a non-200 item),
        RollbackRefused (``collateral.*``); EvidenceError leaves for an item that does not verify,
        with its URL in ``fields``. Nothing is imported when any item is refused.
    """
    responses = load_bundle(data)
    parsed = [(endpoints.parse_url(r.url), r) for r in responses]  # every URL checked before any work
    parsed.sort(key=lambda pair: _rank(pair[0]))  # stable: the bundle's order within a rank
    result = ImportResult()
    now = svc.clock.now()
    with svc.db.transaction() as session:
        mark = changes.high_water(session)
        for ep, resp in parsed:
            item = verify_response(ep, resp, roots, _amd_chains(session, ep))
            (result.added if insert(session, item, now) else result.already_cached).append(ep.url)
            if progress is not None:
                progress(ep.url)
        result.changed = changes.since(session, mark)
    return result


@dataclass
class RefreshResult:
    refreshed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)  # as ImportResult.changed

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict[str, Any]:
        return {"refreshed": self.refreshed, "unchanged": self.unchanged, "refused": self.refused,
                "changed": [c.to_json() for c in self.changed]}


def refresh(svc: Services, fetcher: Fetcher, *, within: timedelta,
            roots: TrustRoots = DEFAULT_ROOTS, fence: Fence | None = None) -> RefreshResult:
    """Fetch again every cached resource whose newest item's nextUpdate falls within ``within`` of now.

    Each resource in its own transaction: one vendor failure or refused rollback does not stop the
    others, and is reported (``refused``: url, code) rather than raised. ``fence``: the collateral
    duty's lease, checked first in each of those transactions (:func:`store_response`).

    Raises:
        the fence's LeaseLost (``collateral.duty_lease_lost``): another holder took the duty over; this
        refresh stops and writes nothing more.
    """
    now = svc.clock.now()
    with svc.db.read() as session:
        due = [(row.url, row.next_update) for row in newest_per_key(session) if row.next_update <= now + within]
        mark = changes.high_water(session)
    result = RefreshResult()
    for url, _ in due:
        ep = endpoints.parse_url(url)
        try:
            added = fetch_and_store(svc, ep, fetcher, roots, fence)
        except LeaseLost:
            raise  # not this resource's failure: the whole refresh stops
        except CAServiceError as exc:
            result.refused.append({"url": ep.url, "code": exc.code, "detail": exc.detail})
            continue
        (result.refreshed if added else result.unchanged).append(ep.url)
    if result.refreshed:
        with svc.db.read() as session:
            result.changed = changes.since(session, mark)
    return result
