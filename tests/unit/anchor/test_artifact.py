"""The committed artifact is what the pinned solcjs makes of the committed source."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SOLC = REPO / "node_modules" / "solc" / "package.json"


@pytest.mark.skipif(not SOLC.exists() or shutil.which("node") is None,
                    reason="solcjs not installed (npm ci at the repo root)")
def test_artifact_is_current() -> None:
    out = subprocess.run(["node", str(REPO / "scripts" / "compile_contract.mjs"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
