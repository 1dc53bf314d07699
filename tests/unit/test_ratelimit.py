"""The token buckets (ca_service/ratelimit.py) and who a request counts against (api/ratelimit.py)."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os

import pytest

from ca_service.api.ratelimit import client_key
from ca_service.config import Settings
from ca_service.errors import ConfigurationError
from ca_service.ratelimit import Buckets, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_then_the_rate():
    clock = Clock()
    b = Buckets(rate=2, burst=3, clock=clock)
    assert [b.take("c").allowed for _ in range(4)] == [True, True, True, False]
    refused = b.take("c")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert retry_after_seconds(refused) == 1
    clock.t += 0.5  # one token back at 2/s
    assert b.take("c").allowed
    assert not b.take("c").allowed
    clock.t += 60  # refills to the burst, never past it
    assert [b.take("c").allowed for _ in range(4)] == [True, True, True, False]
    # another key has its own bucket
    assert b.take("other").allowed


def test_retry_after_is_whole_seconds_rounded_up():
    clock = Clock()
    b = Buckets(rate=0.1, burst=1, clock=clock)
    assert b.take("c").allowed
    d = b.take("c")
    assert d.retry_after == pytest.approx(10.0) and retry_after_seconds(d) == 10
    clock.t += 9.5
    assert retry_after_seconds(b.take("c")) == 1


def test_a_clock_that_went_back_never_stalls_a_bucket_for_long():
    clock = Clock()
    b = Buckets(rate=1, burst=1, clock=clock)
    assert b.take("c").allowed
    clock.t -= 500  # a stale slot from before a reboot (CLOCK_MONOTONIC restarts)
    assert not b.take("c").allowed
    clock.t += 1
    assert b.take("c").allowed


def test_the_table_never_grows_and_a_flood_cannot_free_a_held_back_client():
    clock = Clock()
    b = Buckets(rate=0.001, burst=2, slots=8, clock=clock)
    size = len(b._map)
    assert b.take("abuser").allowed and b.take("abuser").allowed
    assert not b.take("abuser").allowed
    # a flood of distinct clients, far more than there are slots: each gets its burst (fair), the
    # table stays the same size, and the fuller buckets are the ones taken over
    assert all(b.take(f"flood-{i}").allowed for i in range(1000))
    assert len(b._map) == size == 12 + 8 * 24
    assert not b.take("abuser").allowed


def _drain(path: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from pathlib import Path

    b = Buckets(rate=0.001, burst=25, path=Path(path))
    out.put(sum(b.take("one client").allowed for _ in range(n)))
    b.close()


def test_one_table_holds_across_processes(tmp_path):
    path = Buckets.create(tmp_path / "run" / "ratelimit")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_drain, args=(str(path), 20, out)) for _ in range(4)]
    for p in procs:
        p.start()
    allowed = sum(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    # 80 requests from four processes against one bucket of 25: 25 pass, not 4 x 20
    assert allowed == 25
    # create() empties it again (serve does at start); it is not truncated under other mappers
    Buckets.create(path)
    b = Buckets(rate=0.001, burst=25, path=path)
    assert b.take("one client").allowed
    b.close()


def test_a_file_that_is_not_a_table_is_refused(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"not a table" * 10000)
    with pytest.raises(ValueError, match="not a rate-limit table"):
        Buckets(rate=1, burst=1, path=bad)


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32"))


@pytest.mark.parametrize(("peer", "xff", "trusted", "client"), [
    ("198.51.100.7", None, (), "198.51.100.7"),
    # a header from a peer that is not a trusted proxy is anyone's say-so
    ("198.51.100.7", "203.0.113.9", TRUSTED, "198.51.100.7"),
    ("198.51.100.7", "203.0.113.9", (), "198.51.100.7"),
    # from a trusted proxy: the last hop that is not a trusted proxy
    ("10.1.2.3", "203.0.113.9", TRUSTED, "203.0.113.9"),
    ("10.1.2.3", "1.1.1.1, 203.0.113.9, 192.0.2.1", TRUSTED, "203.0.113.9"),
    ("10.1.2.3", "garbage, 203.0.113.9", TRUSTED, "203.0.113.9"),
    ("10.1.2.3", "203.0.113.9, garbage", TRUSTED, "10.1.2.3"),
    # IPv6: one host gets a /64, so the /64 is the client
    ("2001:db8:1:2:aaaa::1", None, (), "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", None, (), "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", None, (), "198.51.100.7"),
    ("fe80::1%eth0", None, (), "fe80::/64"),
    ("not-an-address", None, (), "peer:not-an-address"),
])
def test_client_key(peer, xff, trusted, client):
    assert client_key(peer, xff, trusted) == client


def test_settings():
    s = Settings.from_env({"CA_SERVICE_RATE_LIMIT": "2.5", "CA_SERVICE_RATE_LIMIT_BURST": "7",
                           "CA_SERVICE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"})
    assert (s.rate_limit_per_second, s.rate_limit_burst, s.trusted_proxies) == (2.5, 7, ("10.0.0.0/8", "192.0.2.1"))
    assert Settings.from_env({}).rate_limit_per_second == 10.0 and Settings.from_env({}).rate_limit_burst == 50
    assert Settings.from_env({"CA_SERVICE_RATE_LIMIT": "off"}).rate_limit_per_second == 0
    for bad in ({"CA_SERVICE_RATE_LIMIT": "-1"}, {"CA_SERVICE_RATE_LIMIT_BURST": "0"},
                {"CA_SERVICE_RATE_LIMIT": "fast"}, {"CA_SERVICE_TRUSTED_PROXIES": "proxy.example"}):
        with pytest.raises(ConfigurationError):
            Settings.from_env(bad)
