"""Offline bundles for air-gapped CAs: ``fetch`` what given evidence needs (on a connected machine, no
CA needed), ``export`` what a CA has cached. Both write the bundle format ``import`` reads
(DESIGN.md, Interfaces: ``[{url, status, headers, body_b64, fetched_at}]``).

``fetch_for`` asks each evidence family what it needs (``evidence/needs.py``), maps each resource to
its allowlisted endpoint, GETs it (the fetcher backs off on 429 + Retry-After), and verifies every
response to a pinned root before it goes into the bundle, so a bad or truncated vendor answer is
reported here, on the connected side, rather than at import on the air-gapped one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import Endpoint, Kind, endpoint_for
from ca_service.collateral.fetchers import Fetcher, Response
from ca_service.collateral.verify import verify_response
from ca_service.db.models.collateral import CollateralItem
from ca_service.errors import CAServiceError
from ca_service.evidence.needs import detect_kind, needs_for, served
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots
from ca_service.services.container import Services

Progress = Callable[[str], None]


@dataclass
class FetchResult:
    responses: list[Response] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # needed by several evidence files: fetched once
    refused: list[dict[str, str]] = field(default_factory=list)  # {evidence, url, code, detail}
    waited_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict[str, Any]:
        return {"fetched": self.fetched, "shared": self.shared, "refused": self.refused,
                "waited_seconds": self.waited_seconds}


@dataclass
class _Run:
    fetcher: Fetcher
    roots: TrustRoots
    progress: Progress | None
    result: FetchResult = field(default_factory=FetchResult)
    done: dict[str, Response] = field(default_factory=dict)

    def chains(self) -> list[bytes]:
        return [r.body for u, r in self.done.items()
                if endpoints.parse_url(u).kind in (Kind.VCEK_CHAIN, Kind.VLEK_CHAIN)]

    def get(self, ep: Endpoint) -> None:
        """Fetch and verify one endpoint (once per run). Raises the refusal."""
        if ep.url in self.done:
            if ep.url not in self.result.shared:
                self.result.shared.append(ep.url)
            return
        resp = self.fetcher.fetch(ep)
        item = verify_response(ep, resp, self.roots, self.chains())
        # recorded with what an import verifies it with again (an NVIDIA OCSP answer's issuer chain)
        resp = Response(resp.url, resp.status, {**resp.headers, **item.headers}, resp.body, resp.fetched_at)
        self.done[ep.url] = resp
        self.result.responses.append(resp)
        self.result.fetched.append(ep.url)
        if self.progress is not None:
            self.progress(ep.url)


def _rank(ep: Endpoint) -> int:
    # a VCEK and an AMD CRL verify against their product line's cert_chain: fetch that first
    return 1 if ep.kind in (Kind.VCEK, Kind.VCEK_CRL, Kind.VLEK_CRL) else 0


def fetch_for(evidence: Sequence[tuple[str, bytes]], fetcher: Fetcher, *, update: str | None = None,
              roots: TrustRoots = DEFAULT_ROOTS, progress: Progress | None = None,
              device_chains: Sequence[bytes] = ()) -> FetchResult:
    """Fetch exactly the collateral the given evidence needs. ``evidence``: (name, bytes) pairs; the
    kind of each is recognised by its content. Refusals are collected per evidence file, not raised.
    ``device_chains``: the device chain of each NVIDIA GPU report, in the order of those reports (its
    OCSP answers are named by its certificates).
    """
    run = _Run(fetcher, roots, progress)
    chains = iter(device_chains)
    for name, data in evidence:
        try:
            kind = detect_kind(data)
            sent = [next(chains, b"")] if kind == "nvidia-gpu" else []  # the GPU's needs are read from its chain
            alternatives = needs_for(kind, data, [c for c in sent if c], roots)
        except CAServiceError as exc:
            run.result.refused.append({"evidence": name, "url": "", "code": exc.code, "detail": exc.detail})
            continue
        first: tuple[str, CAServiceError] | None = None
        for alternative in alternatives:
            eps = sorted((endpoint_for(n, update=update) for n in served(alternative)), key=_rank)
            try:
                for ep in eps:
                    current = ep.url
                    run.get(ep)
            except CAServiceError as exc:  # KDS answers 404 for another product line: try the next
                first = first or (current, exc)
                continue
            first = None
            break
        if first is not None:
            url, err = first
            run.result.refused.append({"evidence": name, "url": url, "code": err.code, "detail": err.detail})
    waited = getattr(fetcher, "waited", None)
    run.result.waited_seconds = float(sum(waited)) if isinstance(waited, list) else 0.0
    return run.result


def _response(row: CollateralItem) -> Response:
    return Response(row.url, 200, dict(row.headers), row.body, row.fetched_at)


def cached_responses(svc: Services) -> list[Response]:
    """Every cached item as the vendor served it, oldest TCB evaluation data first within a resource
    (so an import into a fresh CA never looks like a rollback), chains before what they sign."""
    from sqlalchemy import select

    with svc.db.read() as session:
        rows = list(session.scalars(select(CollateralItem)))
        rows.sort(key=lambda r: (_rank(endpoints.parse_url(r.url)), r.kind, r.key,
                                 r.tcb_evaluation_data_number or 0, r.issue_date, r.id))
        return [_response(r) for r in rows]
