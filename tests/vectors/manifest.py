"""Load ../shared/vectors (real hardware evidence) and its manifest.

The vectors live beside the repository (``../shared/vectors``) or where ``CA_SERVICE_VECTORS``
points. Each entry is verified as of its ``verify_time``, never now.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def vectors_dir() -> Path:
    env = os.environ.get("CA_SERVICE_VECTORS")
    if env:
        return Path(env)
    # beside the checkout (../shared/vectors), else the workplace copy a fresh CI clone sees
    for cand in (REPO.parent / "shared" / "vectors", Path("/work/shared/vectors")):
        if (cand / "manifest.json").exists():
            return cand
    raise FileNotFoundError("shared vectors not found: set CA_SERVICE_VECTORS")


@dataclass(frozen=True)
class Vector:
    path: str
    tee: str
    kind: str
    files: dict[str, str]
    expected: dict[str, Any]
    verify_time: datetime
    raw: dict[str, Any]

    @property
    def dir(self) -> Path:
        return vectors_dir() / self.path

    def read(self, role: str) -> bytes:
        return (self.dir / self.files[role]).read_bytes()

    @property
    def id(self) -> str:
        return self.path


def load_manifest() -> list[Vector]:
    data = json.loads((vectors_dir() / "manifest.json").read_text())
    entries = data if isinstance(data, list) else data.get("vectors", [])
    out = []
    for e in entries:
        vt = datetime.fromtimestamp(int(e["verify_time_unix"]), UTC) if "verify_time_unix" in e else (
            datetime.fromisoformat(e["verify_time"].replace("Z", "+00:00"))
        )
        out.append(Vector(e["path"], e["tee"], e.get("kind", ""), dict(e.get("files", {})),
                          dict(e.get("expected", {})), vt, e))
    return out


def vectors_for(tee: str) -> list[Vector]:
    return [v for v in load_manifest() if v.tee == tee]
