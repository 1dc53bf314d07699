"""docker/compose.yaml: pinned images, healthchecks, dependencies waited for, nothing fetched at
start. (CI also runs `docker compose config` where the compose plugin exists.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_is_pinned_and_healthchecked():
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "anvil", "ca"}
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", services["postgres"]["image"])
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        assert "npx" not in str(svc.get("command", "")) + str(svc["healthcheck"]), name
    assert services["ca"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                            "anvil": {"condition": "service_healthy"}}
    anvil = (DOCKER / services["anvil"]["build"]["dockerfile"].removeprefix("docker/")).read_text()
    assert "npm ci" in anvil and "package-lock.json" in anvil and "npx" not in anvil
    assert re.search(r"^FROM node:\d+\.\d+\.\d+-", anvil, re.M)
