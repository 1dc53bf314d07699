"""One log, many replicas: the origin is stored with the log (in its checkpoints), and a replica
configured with another CA_SERVICE_PUBLIC_URL / origin neither signs checkpoints nor starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ca_service.errors import LogOriginMismatch

CLI = [sys.executable, "-m", "ca_service.cli"]


def test_a_replica_with_another_origin_refuses(ca_settings, services, issuer):
    from ca_service.services.container import Services
    from ca_service.services.log import check_log_origin, publish_checkpoint

    assert issuer.issue().status_code == 201
    cp = publish_checkpoint(services)
    assert cp is not None and cp.note.startswith(ca_settings.log_origin + "\n")
    other = Services.create(ca_settings.with_(public_url="https://other.example", log_origin="other.example/ca-service/log"))
    try:
        assert issuer.issue().status_code == 201
        with pytest.raises(LogOriginMismatch) as exc:
            publish_checkpoint(other)
        assert exc.value.code == "log.origin_mismatch"
        with pytest.raises(LogOriginMismatch):
            check_log_origin(other)
        check_log_origin(services)  # the agreeing replica carries on
        assert publish_checkpoint(services).size > cp.size
    finally:
        other.close()
    env = {**os.environ, "CA_SERVICE_HOME": str(ca_settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": ca_settings.database_url, "CA_SERVICE_PUBLIC_URL": "https://other.example"}
    p = subprocess.run([*CLI, "serve", "--bind", "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "log.origin_mismatch" in p.stderr and "CA_SERVICE_LOG_ORIGIN" in p.stderr
