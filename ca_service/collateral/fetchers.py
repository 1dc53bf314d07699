"""How collateral is obtained: a ``Fetcher`` takes an :class:`Endpoint` (never a free URL) and returns
the vendor's HTTP response as recorded bytes.

- :class:`RequestsFetcher`: the real vendors over HTTPS with ``requests`` (no redirects, a timeout, a
  size cap). AMD KDS throttles: a 429 (or 503) is retried after its ``Retry-After`` (seconds or an
  HTTP-date, RFC 9110 section 10.2.3), or after an exponential backoff when it gives none, a bounded
  number of times; a wait longer than the cap is not waited for (the 429 is returned). ``mirrors``
  maps an allowlisted host to another base URL (a PCCS-like mirror, or a local test server); it is
  operator configuration, never derived from evidence. An endpoint with a request body (NVIDIA OCSP)
  is POSTed to the host's root as ``application/ocsp-request`` (RFC 6960 appendix A.1), as NVIDIA's
  own tools ask; its response is recorded under the request's GET URL.
- :class:`FakeFetcher`: in memory, for unit tests.
- :class:`ReplayFetcher`: replays an offline bundle by URL (air-gapped deployments, tests).

An offline bundle is a JSON list ``[{url, status, headers, body_b64, fetched_at}]`` of vendor responses
exactly as served (DESIGN.md, Interfaces).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests

from ca_service import boundedjson
from ca_service.clock import Clock, SystemClock
from ca_service.collateral.endpoints import ALLOWED_HOSTS, Endpoint, parse_url
from ca_service.collateral.errors import BundleInvalid, FetchFailed, HostNotAllowed

MAX_BODY_BYTES = 4 << 20  # a PCK CRL is a few KiB, TCB Info tens of KiB; refuse anything absurd
TIMEOUT_SECONDS = (5.0, 20.0)
RETRY_STATUSES = frozenset({429, 503})
RETRIES = 4
MAX_RETRY_AFTER_SECONDS = 120.0


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` (RFC 9110 section 10.2.3) as seconds from ``now``: delay-seconds or an HTTP-date;
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Response:
    """One vendor HTTP response, as recorded. Header names are kept as served; look them up with
    :meth:`header` (case-insensitive)."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    fetched_at: datetime

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "headers": dict(self.headers),
                "body_b64": base64.b64encode(self.body).decode(), "fetched_at": _rfc3339(self.fetched_at)}


class Fetcher(Protocol):
    def fetch(self, endpoint: Endpoint) -> Response:
        """The vendor's response for ``endpoint`` (any status: the caller decides).

        Raises:
            FetchFailed (``collateral.fetch_failed``): no response at all (network, timeout, too large).
        """
        ...


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RequestsFetcher:
    """Intel PCS / AMD KDS over HTTPS. ``clock`` stamps ``fetched_at``."""

    clock: Clock = field(default_factory=SystemClock)
    mirrors: Mapping[str, str] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    timeout: tuple[float, float] = TIMEOUT_SECONDS
    retries: int = RETRIES
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS
    sleep: Callable[[float], None] = time.sleep
    waited: list[float] = field(default_factory=list)  # every backoff taken, for the caller's summary

    def __post_init__(self) -> None:
        unknown = set(self.mirrors) - ALLOWED_HOSTS
        if unknown:
            raise HostNotAllowed(f"mirrors given for hosts outside the allowlist: {sorted(unknown)}")

    def _transport_url(self, endpoint: Endpoint) -> str:
        base = self.mirrors.get(endpoint.host)
        if base is None:
            return endpoint.url
        return base.rstrip("/") + endpoint.url.removeprefix(f"https://{endpoint.host}")

    def fetch(self, endpoint: Endpoint) -> Response:
        for attempt in range(self.retries + 1):
            resp = self._get(endpoint)
            if resp.status not in RETRY_STATUSES or attempt == self.retries:
                return resp
            wait = retry_after_seconds(resp.header("Retry-After"), self.clock.now())
            wait = float(2**attempt) if wait is None else wait
            if wait > self.max_retry_after:
                return resp  # throttled for longer than we wait: the caller sees the 429
            self.waited.append(wait)
            self.sleep(wait)
        raise FetchFailed(f"GET {endpoint.url}: no attempt made", url=endpoint.url)

    def _get(self, endpoint: Endpoint) -> Response:
        url = self._transport_url(endpoint)
        try:
            if endpoint.post_body is not None:
                root = self.mirrors.get(endpoint.host, f"https://{endpoint.host}").rstrip("/") + "/"
                call = self.session.post(root, data=endpoint.post_body, timeout=self.timeout, allow_redirects=False,
                                         stream=True, headers={"Content-Type": "application/ocsp-request"})
            else:
                call = self.session.get(url, timeout=self.timeout, allow_redirects=False, stream=True)
            with call as resp:
                body = resp.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
                status, headers = resp.status_code, dict(resp.headers)
        except Exception as exc:  # noqa: BLE001 - the IO boundary raises one family (STYLE.md 5)
            raise FetchFailed(f"GET {endpoint.url} failed", url=endpoint.url) from exc
        if len(body) > MAX_BODY_BYTES:
            raise FetchFailed(f"GET {endpoint.url}: response larger than {MAX_BODY_BYTES} bytes", url=endpoint.url)
        # Recorded under the vendor URL, whatever mirror served it: the bundle and cache name the resource.
        return Response(endpoint.url, status, headers, body, self.clock.now())


@dataclass
class FakeFetcher:
    """In-memory responses by URL; counts calls. Unknown URLs answer 404 like the vendors do."""

    responses: dict[str, Response] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: SystemClock().now())

    def add(self, response: Response) -> None:
        self.responses[parse_url(response.url).url] = response

    def fetch(self, endpoint: Endpoint) -> Response:
        self.calls.append(endpoint.url)
        hit = self.responses.get(endpoint.url)
        if hit is None:
            return Response(endpoint.url, 404, {}, b"", self.now)
        return hit


class ReplayFetcher(FakeFetcher):
    """Replays an offline bundle by (canonical) URL."""

    @classmethod
    def from_bundle(cls, responses: Iterable[Response]) -> ReplayFetcher:
        f = cls()
        for r in responses:
            f.add(r)
        return f


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise BundleInvalid(f"{what} is not an RFC 3339 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BundleInvalid(f"{what} is not RFC 3339") from exc
    if dt.tzinfo is None:
        raise BundleInvalid(f"{what} has no time zone")
    return dt.astimezone(UTC)


def load_bundle(data: bytes) -> list[Response]:
    """Parse an offline bundle. Only its shape is checked here; every item is verified on import.

    Raises:
        BundleInvalid (``collateral.bundle_invalid``): not a JSON list of response records.
    """
    try:
        items = boundedjson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleInvalid("bundle is not JSON") from exc
    if not isinstance(items, list):
        raise BundleInvalid("bundle is not a JSON list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"url", "status", "headers", "body_b64", "fetched_at"}:
            raise BundleInvalid(f"bundle item {i} is not {{url, status, headers, body_b64, fetched_at}}", index=i)
        url, status, headers, body = item["url"], item["status"], item["headers"], item["body_b64"]
        if not isinstance(url, str) or not isinstance(status, int) or isinstance(status, bool):
            raise BundleInvalid(f"bundle item {i}: url or status has the wrong type", index=i)
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
            raise BundleInvalid(f"bundle item {i}: headers are not a string map", index=i)
        if not isinstance(body, str):
            raise BundleInvalid(f"bundle item {i}: body_b64 is not a string", index=i)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BundleInvalid(f"bundle item {i}: body_b64 is not base64", index=i) from exc
        out.append(Response(url, status, headers, raw, _parse_time(item["fetched_at"], f"bundle item {i} fetched_at")))
    return out


def dump_bundle(responses: Iterable[Response]) -> bytes:
    return json.dumps([r.to_json() for r in responses], indent=1).encode()
