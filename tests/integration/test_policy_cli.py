"""``ca-service policy apply|list|show|diff|activate|retire|dry-run`` and ``token`` on the test CA."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca_service.cli.main import cli
from tests.integration.test_policy_api import OTHER_MRTD, SIM_MRTD, policy_yaml


@pytest.fixture
def run(ca_settings, monkeypatch):
    monkeypatch.setenv("CA_SERVICE_HOME", str(ca_settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", ca_settings.database_url)
    monkeypatch.setenv("CA_SERVICE_PROFILE", ca_settings.profile)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_policy_cli_round_trip(run, issuer, tmp_path: Path):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    f1, f2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    f1.write_text(policy_yaml(name, SIM_MRTD))
    f2.write_text(policy_yaml(name, OTHER_MRTD))
    assert run("policy", "apply", str(f1), "--activate").splitlines()[0].startswith(f"created {name}@1 sha256:")
    assert run("policy", "apply", str(f1)).startswith(f"unchanged {name}@1")
    assert issuer.issue(policy=name).status_code == 201
    assert run("policy", "apply", str(f2)).startswith(f"created {name}@2")
    out = run("policy", "diff", name, "1", "2")
    assert f'- /evidence/sim/mrtd/-: "{SIM_MRTD}"' in out and f'+ /evidence/sim/mrtd/-: "{OTHER_MRTD}"' in out
    changes = json.loads(run("policy", "diff", name, "1", "--json"))["changes"]
    assert len(changes) == 2
    # dry run: the candidate would refuse what v1 admitted; exit 1, and it says why
    out = run("policy", "dry-run", name, "--version", "2", code=1)
    assert "would fail 1" in out and f'sim.mrtd: expected ["{OTHER_MRTD}"], actual "{SIM_MRTD}"' in out
    rep = json.loads(run("policy", "dry-run", name, "--file", str(f1), "--json"))
    assert rep["would_pass"] == 1 and rep["candidate"]["version"] is None
    assert run("policy", "activate", name, "2").startswith(f"activated {name}@2")
    assert json.loads(run("policy", "show", name))["version"] == 2
    assert json.loads(run("policy", "show", name, "--version", "1"))["active"] is False
    out = run("policy", "retire", name, "1", "--revoke")
    assert out.startswith(f"retired {name}@1; revoked 1 certificate(s)")
    assert f"{name}: active 2; versions 1R, 2" in run("policy", "list")
    res = CliRunner().invoke(cli, ["policy", "activate", name, "1"])
    assert res.exit_code != 0


def test_token_cli(run):
    created = json.loads(run("token", "create", "--role", "auditor", "--name", "cli-tok", "--expires-in", "1d",
                             "--json"))
    assert created["token"].startswith("cas_") and created["role"] == "auditor" and created["expires_at"]
    listing = json.loads(run("token", "list", "--json"))
    row = next(r for r in listing if r["id"] == created["id"])
    assert "token" not in row and row["revoked_at"] is None
    assert run("token", "revoke", str(created["id"])).strip() == f"token {created['id']} revoked"
    assert "already revoked" in run("token", "revoke", str(created["id"]))
    plain = run("token", "create", "--role", "admin")
    assert plain.strip().splitlines()[-1].startswith("cas_")
