"""Progress bars of ``collateral import``, ``export`` and ``fetch`` (issue 14, Air-gapped CAs: "rich
progress bars when many items are involved, and a summary at the end"), as an operator sees them: the
real CLI in a subprocess whose stderr is a terminal (a pseudo-terminal here), stdout a pipe. The bar is
drawn on stderr only, with the count of items done; the summary line is stdout's alone. Without a
terminal (a pipe, a log file) there is no bar. The CA is on the session's database (PostgreSQL in a
PostgreSQL run); the vendors are the loopback replay of Intel PCS and AMD KDS."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from typing import Any

from tests.collateral.fixtures import fresh_services
from tests.collateral.replay import mirror_args, serve
from tests.integration.test_collateral_bundles import SNP, TDX, _recorded, _vector

CLI = [sys.executable, "-m", "ca_service.cli"]


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (200 columns, wide enough for the bar's columns and
    its item label, so no count is cut short) and stdout on a pipe: (rc, stdout, the terminal's bytes as text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    seen = bytearray()

    def drain() -> None:  # read while it runs: a full terminal buffer would block the CLI
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer closed it
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=slave, timeout=180)
    finally:
        os.close(slave)
    reader.join(30)
    os.close(master)
    return proc.returncode, proc.stdout.decode(), seen.decode(errors="replace")


def _env(svc: Any) -> dict[str, str]:
    return {**os.environ, "CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_DATABASE_URL": svc.settings.database_url,
            "CA_SERVICE_PROFILE": svc.settings.profile, "TERM": "xterm-256color",
            # rich takes COLUMNS/LINES before the terminal's size: a runner's own (pytest-xdist) would narrow it
            "COLUMNS": "200", "LINES": "40"}


def test_import_export_and_fetch_draw_a_bar_on_a_terminal(tmp_path, tmp_path_factory, db_url_factory):
    # both dates' collateral of the TDX vector and the SNP vector's: 14 items, older evaluation first
    entries = _recorded("collateral-2025-06") + _recorded("collateral-2025-10")
    assert len(entries) == 14
    (tmp_path / "both.json").write_text(json.dumps(entries))
    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        env = _env(svc)
        rc, out, term = _run_on_a_terminal(["collateral", "import", "--no-reappraise", str(tmp_path / "both.json")],
                                           env)
        assert rc == 0, term
        # the SNP items and Intel's Root CA CRL are the same on both dates: imported once, then already cached
        assert out.startswith("imported 10 item(s); 4 already cached\n"), out
        assert "import" in term and "14/14" in term, term
        assert "imported" not in term  # the summary is stdout's

        rc, out, term = _run_on_a_terminal(["collateral", "export", str(tmp_path / "out.json")], env)
        assert rc == 0 and out.startswith("exported 10 item(s)"), (out, term)
        assert "export" in term and "10/10" in term, term

        # fetch for two evidence files: the bar counts the resources fetched against an estimate of
        # four per file; the summary says what was fetched
        tdx, snp = _vector(TDX, "collateral-2025-10"), _vector(SNP)
        (tmp_path / "quote.bin").write_bytes(tdx.read("quote"))
        (tmp_path / "report.bin").write_bytes(snp.read("report"))
        with serve(_recorded()) as (_, base):
            rc, out, term = _run_on_a_terminal(
                ["collateral", "fetch", "--for", str(tmp_path / "quote.bin"), "--for", str(tmp_path / "report.bin"),
                 str(tmp_path / "fetched.json"), *mirror_args(base)], env)
        assert rc == 0, term
        assert out.startswith("fetched 7 item(s) for 2 evidence file(s)"), out
        assert "fetch" in term and "7/8" in term, term

        # no terminal (stderr a pipe): no bar, the same summary
        res = subprocess.run([*CLI, "collateral", "import", "--no-reappraise", str(tmp_path / "out.json")], env=env,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0 and res.stdout.startswith("imported 0 item(s); 10 already cached"), res.stderr
        assert "10/10" not in res.stderr and "\x1b[" not in res.stderr, res.stderr
    finally:
        svc.close()


def test_a_few_items_draw_no_bar(tmp_path, tmp_path_factory, db_url_factory):
    """Fewer than eight items: the summary line says it all (cli/progress.py MANY)."""
    entries = [e for e in _recorded() if "kdsintf" in e["url"]]
    assert len(entries) == 3
    (tmp_path / "amd.json").write_text(json.dumps(entries))
    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        rc, out, term = _run_on_a_terminal(["collateral", "import", "--no-reappraise", str(tmp_path / "amd.json")],
                                           _env(svc))
        assert rc == 0 and out.startswith("imported 3 item(s); 0 already cached"), (out, term)
        assert "3/3" not in term and "\x1b[" not in term, term
    finally:
        svc.close()

