"""A fake configfs-tsm tree and CCEL file in a temp directory, in the kernel's file layout.

configfs creates an entry's attribute files on ``mkdir`` and drops them on ``rmdir``; a plain
directory does neither, so the fake wraps ``os.mkdir`` / ``os.rmdir`` for paths under its root only
(everything else goes to the real calls). The report bytes are real ones from the vectors.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


class FakeConfigfs:
    def __init__(self, base: Path, provider: str, outblob: bytes, auxblob: bytes | None = None) -> None:
        self.root = base / "sys/kernel/config/tsm/report"
        self.root.mkdir(parents=True)
        self.provider, self.outblob, self.auxblob = provider, outblob, auxblob
        self.inblobs: list[bytes] = []
        self.privlevels: list[str] = []
        self.live: set[Path] = set()
        self._mkdir, self._rmdir = os.mkdir, os.rmdir

    def install(self, monkeypatch: Any) -> FakeConfigfs:
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)
        return self

    def mkdir(self, path: Any, mode: int = 0o777, *a: Any, **kw: Any) -> None:
        p = Path(path)
        self._mkdir(path, mode, *a, **kw)
        if p.parent == self.root:  # the kernel populates a new report entry
            (p / "provider").write_text(self.provider + "\n")
            (p / "generation").write_text("0\n")
            (p / "inblob").write_bytes(b"")
            (p / "outblob").write_bytes(self.outblob)
            if self.auxblob is not None:
                (p / "auxblob").write_bytes(self.auxblob)
            if self.provider == "sev_guest":
                (p / "privlevel").write_text("0\n")
            self.live.add(p)

    def rmdir(self, path: Any, *a: Any, **kw: Any) -> None:
        p = Path(path)
        if p in self.live:
            self.inblobs.append((p / "inblob").read_bytes())
            if (p / "privlevel").exists():
                self.privlevels.append((p / "privlevel").read_text().strip())
            self.live.discard(p)  # before rmtree, which calls os.rmdir itself
            shutil.rmtree(p)
            return
        self._rmdir(path, *a, **kw)


def fake_ccel(base: Path, data: bytes) -> Path:
    path = base / "sys/firmware/acpi/tables/data/CCEL"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path
