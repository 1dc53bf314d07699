"""Regenerate the crafted SEV-SNP inputs in this folder (from ../shared/vectors/snp/milan-azure-vtpm).

Run from the repository root: ``python tests/corpus/snp/make_corpus.py``. ``index.json`` maps each
file to the error code the verifier must give it (checked by tests/unit/evidence/snp/test_fuzz.py).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.vectors.manifest import vectors_for  # noqa: E402


def main() -> None:
    v = next(v for v in vectors_for("snp") if v.id == "snp/milan-azure-vtpm")
    report = v.read("report")
    hcl = (v.dir / "hcl_report.bin").read_bytes()

    def patch(data: bytes, off: int, new: bytes) -> bytes:
        return data[:off] + new + data[off + len(new) :]

    cases: dict[str, tuple[bytes, str]] = {
        "truncated.bin": (report[:-1], "evidence.malformed"),
        "signed_region_only.bin": (report[:0x2A0], "evidence.malformed"),
        "oversized.bin": (report + b"\x00", "evidence.malformed"),
        "zeros.bin": (bytes(0x4A0), "evidence.unsupported"),
        "version1.bin": (patch(report, 0, struct.pack("<I", 1)), "evidence.unsupported"),
        "version4.bin": (patch(report, 0, struct.pack("<I", 4)), "evidence.unsupported"),
        "sigalgo2.bin": (patch(report, 0x34, struct.pack("<I", 2)), "evidence.unsupported"),
        "signing_key_none.bin": (patch(report, 0x48, struct.pack("<I", 7 << 2)), "evidence.unsupported"),
        "signing_key_vlek.bin": (
            patch(report, 0x48, struct.pack("<I", 1 << 2)),
            "evidence.collateral_missing",
        ),
        "r_high_bytes.bin": (patch(report, 0x2A0 + 48, b"\x01"), "evidence.malformed"),
        "sig_reserved.bin": (patch(report, 0x4A0 - 1, b"\x01"), "evidence.malformed"),
        "flipped_measurement.bin": (
            patch(report, 0x90, bytes([report[0x90] ^ 1])),
            "evidence.signature_invalid",
        ),
        "flipped_host_data.bin": (
            patch(report, 0xC0, bytes([report[0xC0] ^ 1])),
            "evidence.signature_invalid",
        ),
        "other_chip_id.bin": (patch(report, 0x1A0, b"\x00" * 64), "evidence.snp.chip_id_mismatch"),
        "other_reported_tcb.bin": (patch(report, 0x187, b"\x01"), "evidence.snp.tcb_mismatch"),
        "genoa_cpuid.bin": (patch(report, 0x189, b"\x11"), "evidence.snp.product_mismatch"),
        "hcl_truncated.bin": (hcl[:0x4C0], "evidence.malformed"),
        "hcl_tdx.bin": (patch(hcl, 0x4C0 + 8, struct.pack("<I", 4)), "evidence.unsupported"),
        "hcl_runtime_edited.bin": (
            hcl.replace(b'"secure-boot":true', b'"secure-boot":null'),
            "evidence.report_data_mismatch",
        ),
    }
    index = {}
    for name, (data, code) in sorted(cases.items()):
        (HERE / name).write_bytes(data)
        index[name] = code
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
