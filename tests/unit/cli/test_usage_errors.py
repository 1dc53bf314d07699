"""A newcomer's usage mistakes get one clear line naming what is wrong, never a traceback (issue 16,
"Errors"): a time that is not RFC 3339, an unknown evidence kind (the kinds are listed), and a
file that is not PEM where a certificate is expected. In-process with click's runner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ca_service.cli.main import cli as main
from ca_service.evidence.registry import known_kinds


@pytest.fixture
def junk(tmp_path):
    path = tmp_path / "junk.pem"
    path.write_text("not a certificate\n")
    return path


def _error_line(result):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("command", [["evidence", "verify", "tdx-quote"], ["verify"]])
def test_a_time_that_is_not_rfc3339(command, junk):
    line = _error_line(CliRunner().invoke(main, [*command, str(junk), "--at", "yesterday"]))
    assert "'yesterday' is not an RFC 3339 time (for example 2026-03-01T12:00:00Z)" in line


def test_an_unknown_evidence_kind_lists_the_kinds(junk):
    line = _error_line(CliRunner().invoke(main, ["evidence", "verify", "tdx", str(junk)]))
    assert "unknown evidence type 'tdx'" in line
    assert all(kind in line for kind in known_kinds())


def test_a_file_that_is_not_pem(junk, tmp_path):
    root = tmp_path / "root.pem"
    root.write_text("also not PEM\n")
    line = _error_line(CliRunner().invoke(main, ["verify", str(junk), "--root", str(root)]))
    assert "is not a PEM certificate file" in line


def test_a_ca_that_is_not_there_is_one_line_naming_it(tmp_path):
    """``collateral export`` and ``evidence verify --home`` on a home that was never initialised: the
    database cannot be opened, and the operator is told so in one line (it was a 90-line traceback)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "no-such-ca"
    quote = tmp_path / "quote.bin"
    from tests.vectors.manifest import load_manifest

    quote.write_bytes(next(v for v in load_manifest() if v.path == "tdx/gcp-c3-v4-uptodate").read("quote"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    repo = str(Path(__file__).resolve().parents[3])  # this checkout's code, whatever the cwd
    env |= {"CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
            "PYTHONPATH": os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)}
    for args in (["collateral", "export", str(tmp_path / "out.json")],
                 ["evidence", "verify", "tdx-quote", str(quote), "--home", str(home)]):
        run = subprocess.run([sys.executable, "-m", "ca_service.cli", *args], env=env, capture_output=True,
                             text=True, timeout=120, cwd=tmp_path)
        assert run.returncode == 1, (args, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr, run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("error [")]
        assert errors and errors[0].startswith("error [service.database_unavailable]: the CA database cannot be used"), run.stderr
        assert "ca-service init" in errors[0]
    assert not (tmp_path / "out.json").exists()
