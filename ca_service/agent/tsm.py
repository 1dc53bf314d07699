"""Evidence from Linux configfs-tsm (``/sys/kernel/config/tsm/report``): TDX quotes, SNP reports."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TSM_ROOT = Path("/sys/kernel/config/tsm/report")
PROVIDER_KIND = {"tdx_guest": "tdx-quote", "sev_guest": "snp-report"}


def tsm_available(root: Path = TSM_ROOT) -> bool:
    return root.is_dir()


def tsm_report(report_data: bytes, root: Path = TSM_ROOT) -> tuple[str, bytes]:
    """Ask the TEE for evidence carrying ``report_data``; returns (evidence type, bytes)."""
    if len(report_data) != 64:
        raise ValueError("configfs-tsm takes 64 bytes of report data")
    entry = root / f"ca-service-{secrets.token_hex(8)}"
    os.mkdir(entry)
    try:
        (entry / "inblob").write_bytes(report_data)
        provider = (entry / "provider").read_text().strip()
        blob = (entry / "outblob").read_bytes()
    finally:
        os.rmdir(entry)
    kind = PROVIDER_KIND.get(provider)
    if kind is None:
        raise RuntimeError(f"unsupported configfs-tsm provider {provider!r}")
    return kind, blob
