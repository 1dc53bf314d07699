"""Settings from CA_SERVICE_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca_service.config import Settings
from ca_service.errors import ConfigurationError


def test_defaults_and_env():
    s = Settings.from_env({})
    assert s.profile == "production" and s.chain_rpc == "embedded" and s.collateral_mode == "offline"
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("ca-service.db")
    s = Settings.from_env({"CA_SERVICE_HOME": "/tmp/x", "CA_SERVICE_PROFILE": "insecure-dev",
                           "CA_SERVICE_PUBLIC_URL": "https://ca.example/", "CA_SERVICE_ANCHOR_CONFIRMATIONS": "5",
                           "CA_SERVICE_KEY_ENCRYPTION_KEYS": "a, b", "CA_SERVICE_COLLATERAL": "online"})
    assert s.home == Path("/tmp/x") and s.insecure and s.public_url == "https://ca.example"
    assert s.anchor_confirmations == 5 and s.key_encryption_keys == ("a", "b") and s.collateral_mode == "online"
    assert s.log_origin == "ca.example/ca-service/log"


@pytest.mark.parametrize("env", [
    {"CA_SERVICE_PROFILE": "dev"},
    {"CA_SERVICE_ANCHOR_CONFIRMATIONS": "two"},
    {"CA_SERVICE_COLLATERAL": "sometimes"},
    {"CA_SERVICE_CHALLENGE_TTL_SECONDS": "0"},
])
def test_bad_settings_are_refused(env):
    with pytest.raises(ConfigurationError):
        Settings.from_env(env)


def test_online_services_get_a_fetcher(tmp_path):
    from ca_service.collateral.fetchers import RequestsFetcher
    from ca_service.services.container import Services

    svc = Services.create(Settings(home=tmp_path, collateral_mode="online"))
    try:
        assert isinstance(svc.collateral_fetcher, RequestsFetcher)
    finally:
        svc.close()
    svc = Services.create(Settings(home=tmp_path))
    try:
        assert svc.collateral_fetcher is None
    finally:
        svc.close()
