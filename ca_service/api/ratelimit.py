"""Per-client rate limit of the routes that cost the CA work (issue 11 section 7).

``POST /v1/challenges``, ``POST /v1/certificates`` and ``POST /v1/attestations`` each have a token
bucket per client (``CA_SERVICE_RATE_LIMIT`` tokens a second, ``CA_SERVICE_RATE_LIMIT_BURST`` at
most). Above it the answer is 429 ``request.rate_limited`` with ``Retry-After``. No database round
trip: the buckets are a table in shared memory (``ca_service/ratelimit.py``) that every worker of a
``serve`` process uses, so the limit holds across its workers. Each host (replica) keeps its own
table: behind a load balancer over N replicas a client gets up to N times the rate.

The client is the peer address, an IPv6 peer by its /64 (one host gets a whole /64 easily). When
the peer is one of ``CA_SERVICE_TRUSTED_PROXIES``, the client is the last address in
``X-Forwarded-For`` that is not a trusted proxy (what that proxy appended); a header from any
other peer is ignored, since anyone can send one.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from flask import Flask, request

from ca_service.config import Settings
from ca_service.errors import RateLimited
from ca_service.ratelimit import Buckets, retry_after_seconds

LIMITED = frozenset({"/v1/challenges", "/v1/certificates", "/v1/attestations"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def client_key(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client a request counts against (an address, or an IPv6 /64)."""
    addr = _address(peer)
    if addr is not None and trusted and any(addr in net for net in trusted) and forwarded_for:
        for hop in reversed(forwarded_for.split(",")):
            candidate = _address(hop)
            if candidate is None:
                break  # a hop we cannot read: stop at the proxy we trust
            addr = candidate
            if not any(candidate in net for net in trusted):
                break
    if addr is None:
        return f"peer:{peer[:64]}"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def init_app(app: Flask, settings: Settings) -> None:
    if settings.rate_limit_per_second <= 0:
        return
    buckets = Buckets(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst,
                      path=Path(settings.rate_limit_state) if settings.rate_limit_state else None)
    trusted = tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies)
    app.extensions["ca_service.ratelimit"] = buckets

    @app.before_request
    def _rate_limit() -> None:
        rule = request.url_rule
        if request.method != "POST" or rule is None or rule.rule not in LIMITED:
            return
        client = client_key(request.remote_addr or "", request.headers.get("X-Forwarded-For"), trusted)
        decision = buckets.take(f"{rule.rule} {client}")
        if not decision.allowed:
            wait = retry_after_seconds(decision)
            raise RateLimited(f"more than {settings.rate_limit_burst} requests in a burst or "
                              f"{settings.rate_limit_per_second:g}/s to {rule.rule} from this client; "
                              f"retry in {wait} s", retry_after=wait)
