"""Frozen settings read from ``CA_SERVICE_*`` environment variables (documented in the README)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ca_service.errors import ConfigurationError

PROFILES = ("production", "insecure-dev")
# trust domains a test root may be added to (CA_SERVICE_INSECURE_TEST_ROOTS; evidence/trust.py TrustRoots)
TEST_ROOT_DOMAINS = ("intel", "amd", "nvidia_device", "nvidia_rim", "nitro")


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".ca-service")
    profile: str = "production"
    database_url: str = ""
    public_url: str = "http://127.0.0.1:8080"
    chain_rpc: str = "embedded"
    chain_id: int | None = None
    chain_private_key: str | None = None
    anchor_confirmations: int = 2
    anchor_interval_seconds: float = 60.0
    anchor_max_leaves: int = 1000
    # the read side serves an anchor as final only if the chain showed its block this recently
    anchor_confirm_ttl_seconds: float = 2.0
    # the anchoring worker's lease: a replica that stops renewing it (frozen, cut off) is replaced after this long
    anchor_lease_seconds: float = 10.0
    challenge_ttl_seconds: int = 120
    # how often `serve` deletes expired challenges (services/challenges.py purge_expired)
    challenge_purge_interval_seconds: float = 60.0
    max_body_bytes: int = 4 * 1024 * 1024
    key_encryption_keys: tuple[str, ...] = ()
    log_origin: str = ""
    collateral_mode: str = "offline"
    # Intel PCS v4 ``update=`` for TCB Info and QE Identity: "standard" (the PCS default) or "early"
    # (the TCB recovery data Intel publishes ahead of the standard date)
    collateral_update: str = "standard"
    # PCCS-like mirrors of the allowlisted vendor hosts (CA_SERVICE_COLLATERAL_MIRRORS=HOST=URL,...):
    # the resource is still named by its vendor URL, only the transport goes to the mirror
    collateral_mirrors: tuple[tuple[str, str], ...] = ()
    # the collateral duty under `serve` (services/collateral_duty.py): refresh what expires within
    # `within` (online mode only) and re-appraise the certificates a changed resource concerns, every
    # `interval` seconds in one process of all replicas (CA_SERVICE_COLLATERAL_REFRESH=on|off)
    collateral_refresh: bool = True
    collateral_refresh_interval_seconds: float = 3600.0
    collateral_refresh_within: timedelta = timedelta(days=30)
    # the duty's lease (db/lease.py): a holder that stops renewing it (frozen, cut off) is replaced after this long
    collateral_lease_seconds: float = 10.0
    # policies whose certificates may sign integrity reports: comma-separated names, "*" for any;
    # None (unset): any in insecure-dev, none in production
    integrity_policies: str | None = None
    # PostgreSQL timeouts and keepalives (db/session.py DbTimeouts): a lock holder that went away
    # is cut off within seconds, and requests fail fast with a 503 instead of queueing behind it
    db_lock_timeout_ms: int = 5000
    db_statement_timeout_ms: int = 10000
    db_idle_in_transaction_timeout_ms: int = 10000
    db_connect_timeout_seconds: int = 5
    db_keepalives_idle_seconds: int = 5
    # the read-only HTML explorer (CA_SERVICE_EXPLORER=on|off); None (unset): on in insecure-dev only
    explorer: bool | None = None
    # per-client rate limit of POST /v1/challenges, /v1/certificates, /v1/attestations (each its own
    # bucket): tokens per second and bucket size; 0 turns it off (api/ratelimit.py)
    rate_limit_per_second: float = 10.0
    rate_limit_burst: int = 50
    # peers whose X-Forwarded-For names the client (addresses or CIDRs); others are the client
    trusted_proxies: tuple[str, ...] = ()
    # the bucket table shared by the workers of one host (set by `serve`); "" keeps it per process
    rate_limit_state: str = ""
    # FOR TESTS ONLY: (trust domain, PEM file) pairs whose certificates are pinned beside the vendor roots
    # (CA_SERVICE_INSECURE_TEST_ROOTS=intel=/path/root.pem,...), so a test PKI's evidence and collateral
    # verify end to end; refused in the production profile (services/roots.py)
    insecure_test_roots: tuple[tuple[str, Path], ...] = ()

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigurationError(f"CA_SERVICE_PROFILE must be one of {', '.join(PROFILES)}")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{(self.home / 'ca-service.db').resolve()}")
        if not self.log_origin:
            host = urlsplit(self.public_url).netloc or "localhost"
            object.__setattr__(self, "log_origin", f"{host}/ca-service/log")
        if self.collateral_mode not in ("offline", "online"):
            raise ConfigurationError("CA_SERVICE_COLLATERAL must be 'offline' (cache only) or 'online'")
        if min(self.db_lock_timeout_ms, self.db_statement_timeout_ms, self.db_idle_in_transaction_timeout_ms,
               self.db_connect_timeout_seconds, self.db_keepalives_idle_seconds) <= 0:
            raise ConfigurationError("CA_SERVICE_DB_* timeouts must be positive")
        if self.collateral_update not in ("standard", "early"):
            raise ConfigurationError("CA_SERVICE_COLLATERAL_UPDATE must be 'standard' or 'early'")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 1:
            raise ConfigurationError("CA_SERVICE_RATE_LIMIT must be >= 0 (0: off) and CA_SERVICE_RATE_LIMIT_BURST >= 1")
        try:
            for proxy in self.trusted_proxies:
                ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigurationError("CA_SERVICE_TRUSTED_PROXIES must be IP addresses or CIDRs") from exc
        if self.collateral_refresh_interval_seconds <= 0 or self.collateral_refresh_within < timedelta(0):
            raise ConfigurationError("CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS must be positive and "
                                     "CA_SERVICE_COLLATERAL_REFRESH_WITHIN a duration like 30d")
        if self.challenge_purge_interval_seconds <= 0:
            raise ConfigurationError("CA_SERVICE_CHALLENGE_PURGE_INTERVAL_SECONDS must be positive")
        if self.collateral_lease_seconds < 1:
            raise ConfigurationError("CA_SERVICE_COLLATERAL_LEASE_SECONDS must be at least 1")
        if self.anchor_lease_seconds < 1:
            raise ConfigurationError("CA_SERVICE_ANCHOR_LEASE_SECONDS must be at least 1")
        if self.anchor_confirm_ttl_seconds < 0:
            raise ConfigurationError("CA_SERVICE_ANCHOR_CONFIRM_TTL_SECONDS must be >= 0 (0: every read asks)")
        if self.challenge_ttl_seconds <= 0 or self.anchor_confirmations < 0:
            raise ConfigurationError("challenge TTL must be positive and confirmations non-negative")
        if self.insecure_test_roots:
            if not self.insecure:
                raise ConfigurationError("CA_SERVICE_INSECURE_TEST_ROOTS pins test roots: it is for tests, "
                                         "refused in the production profile")
            bad = sorted({d for d, _ in self.insecure_test_roots} - set(TEST_ROOT_DOMAINS))
            if bad:
                raise ConfigurationError(f"CA_SERVICE_INSECURE_TEST_ROOTS: unknown trust domain(s) {', '.join(bad)} "
                                         f"(one of {', '.join(TEST_ROOT_DOMAINS)})")

    @property
    def insecure(self) -> bool:
        return self.profile == "insecure-dev"

    @property
    def explorer_enabled(self) -> bool:
        return self.insecure if self.explorer is None else self.explorer

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(f"CA_SERVICE_{name}")
            return value if value not in (None, "") else None

        kwargs: dict[str, Any] = {}
        if (v := get("HOME")) is not None:
            kwargs["home"] = Path(v)
        if (v := get("PROFILE")) is not None:
            kwargs["profile"] = v
        if (v := get("DATABASE_URL")) is not None:
            kwargs["database_url"] = v
        if (v := get("PUBLIC_URL")) is not None:
            kwargs["public_url"] = v.rstrip("/")
        if (v := get("CHAIN_RPC")) is not None:
            kwargs["chain_rpc"] = v
        if (v := get("CHAIN_PRIVATE_KEY")) is not None:
            kwargs["chain_private_key"] = v
        try:
            if (v := get("CHAIN_ID")) is not None:
                kwargs["chain_id"] = int(v)
            if (v := get("ANCHOR_CONFIRMATIONS")) is not None:
                kwargs["anchor_confirmations"] = int(v)
            if (v := get("ANCHOR_INTERVAL_SECONDS")) is not None:
                kwargs["anchor_interval_seconds"] = float(v)
            if (v := get("ANCHOR_MAX_LEAVES")) is not None:
                kwargs["anchor_max_leaves"] = int(v)
            if (v := get("ANCHOR_CONFIRM_TTL_SECONDS")) is not None:
                kwargs["anchor_confirm_ttl_seconds"] = float(v)
            if (v := get("ANCHOR_LEASE_SECONDS")) is not None:
                kwargs["anchor_lease_seconds"] = float(v)
            if (v := get("CHALLENGE_TTL_SECONDS")) is not None:
                kwargs["challenge_ttl_seconds"] = int(v)
            if (v := get("CHALLENGE_PURGE_INTERVAL_SECONDS")) is not None:
                kwargs["challenge_purge_interval_seconds"] = float(v)
            if (v := get("MAX_BODY_BYTES")) is not None:
                kwargs["max_body_bytes"] = int(v)
            if (v := get("RATE_LIMIT")) is not None:
                kwargs["rate_limit_per_second"] = 0.0 if v.lower() == "off" else float(v)
            if (v := get("RATE_LIMIT_BURST")) is not None:
                kwargs["rate_limit_burst"] = int(v)
            for name in ("DB_LOCK_TIMEOUT_MS", "DB_STATEMENT_TIMEOUT_MS", "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                         "DB_CONNECT_TIMEOUT_SECONDS", "DB_KEEPALIVES_IDLE_SECONDS"):
                if (v := get(name)) is not None:
                    kwargs[name.lower()] = int(v)
        except ValueError as exc:
            raise ConfigurationError("a numeric CA_SERVICE_* setting is not a number") from exc
        if (v := get("KEY_ENCRYPTION_KEYS")) is not None:
            kwargs["key_encryption_keys"] = tuple(k.strip() for k in v.split(",") if k.strip())
        if (v := get("TRUSTED_PROXIES")) is not None:
            kwargs["trusted_proxies"] = tuple(p.strip() for p in v.split(",") if p.strip())
        if (v := get("INTEGRITY_POLICIES")) is not None:
            kwargs["integrity_policies"] = v
        if (v := get("COLLATERAL")) is not None:
            kwargs["collateral_mode"] = v
        if (v := get("EXPLORER")) is not None:
            if v.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise ConfigurationError("CA_SERVICE_EXPLORER must be on or off")
            kwargs["explorer"] = v.lower() in ("on", "true", "1")
        if (v := get("COLLATERAL_UPDATE")) is not None:
            kwargs["collateral_update"] = v
        if (v := get("COLLATERAL_MIRRORS")) is not None:
            kwargs["collateral_mirrors"] = _mirrors(v)
        if (v := get("COLLATERAL_REFRESH")) is not None:
            if v.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise ConfigurationError("CA_SERVICE_COLLATERAL_REFRESH must be on or off")
            kwargs["collateral_refresh"] = v.lower() in ("on", "true", "1")
        if (v := get("COLLATERAL_REFRESH_INTERVAL_SECONDS")) is not None:
            try:
                kwargs["collateral_refresh_interval_seconds"] = float(v)
            except ValueError as exc:
                raise ConfigurationError("CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS is not a number") from exc
        if (v := get("COLLATERAL_LEASE_SECONDS")) is not None:
            try:
                kwargs["collateral_lease_seconds"] = float(v)
            except ValueError as exc:
                raise ConfigurationError("CA_SERVICE_COLLATERAL_LEASE_SECONDS is not a number") from exc
        if (v := get("COLLATERAL_REFRESH_WITHIN")) is not None:
            kwargs["collateral_refresh_within"] = _duration(v, "CA_SERVICE_COLLATERAL_REFRESH_WITHIN")
        if (v := get("LOG_ORIGIN")) is not None:
            kwargs["log_origin"] = v
        if (v := get("INSECURE_TEST_ROOTS")) is not None:
            pairs = []
            for part in (p.strip() for p in v.split(",") if p.strip()):
                domain, sep, path = part.partition("=")
                if not sep or not path:
                    raise ConfigurationError("CA_SERVICE_INSECURE_TEST_ROOTS is DOMAIN=PEM_FILE[,DOMAIN=PEM_FILE...]")
                pairs.append((domain.strip(), Path(path.strip())))
            kwargs["insecure_test_roots"] = tuple(pairs)
        kwargs.update(overrides)
        return cls(**kwargs)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _mirrors(value: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        host, sep, url = part.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ConfigurationError("CA_SERVICE_COLLATERAL_MIRRORS must be HOST=URL,... (an http(s) URL each)")
        out.append((host.strip(), url.strip()))
    return tuple(out)


def _duration(value: str, name: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = value[:-1], value[-1:]
    if unit not in units or not number.isdigit():
        raise ConfigurationError(f"{name} must be a duration like 30d, 12h, 90m")
    return timedelta(seconds=int(number) * units[unit])
