"""`ca-service init` as a newcomer runs it: private files, the root passphrase shown once and not
stored, and a production init outside a TEE refused unless asked for, saying why."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

CLI = [sys.executable, "-m", "ca_service.cli"]


def _init(home: Path, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    env.update({"CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": profile})
    return subprocess.run([*CLI, "init", *args], env=env, capture_output=True, text=True, timeout=120)


def test_init_keeps_its_files_private_and_shows_the_passphrase_once(tmp_path):
    home = tmp_path / "home"
    p = _init(home, "insecure-dev")
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "ca-service.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "secrets" / "fernet.keys").stat().st_mode) == 0o600
    assert not (home / "offline" / "root-key.passphrase").exists()
    m = re.search(r"root key passphrase \(shown once[^:]*: (\S+)", p.stdout)
    assert m is not None, p.stdout
    key = serialization.load_pem_private_key((home / "offline" / "root-key.pem").read_bytes(), m.group(1).encode())
    assert key.key_size == 384
    again = _init(home, "insecure-dev")
    assert again.returncode == 0 and "passphrase" not in again.stdout


def test_production_init_outside_a_tee_is_refused_unless_asked(tmp_path):
    if Path("/sys/kernel/config/tsm/report").exists():
        pytest.skip("a real TEE here: the refusal does not apply")
    p = _init(tmp_path / "prod", "production")
    assert p.returncode != 0
    assert "outside a TEE" in p.stderr and "--outside-tee" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "prod" / "ca-service.db").exists()
    ok = _init(tmp_path / "prod", "production", "--outside-tee")
    assert ok.returncode == 0, ok.stderr
    assert "WARNING" in ok.stderr and "host operator" in ok.stderr
