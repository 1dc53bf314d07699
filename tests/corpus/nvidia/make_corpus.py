"""Regenerate the crafted NVIDIA inputs in this folder (from ../shared/vectors/nvidia/hopper-h100-nvtrust-2023-with-rims).

Run from the repository root: ``python tests/corpus/nvidia/make_corpus.py``. ``index.json`` maps each
file to the error code the verifier gives it with the vector's device chain at its verify_time
(checked by tests/unit/evidence/nvidia/test_nvidia_fuzz.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.vectors.manifest import vectors_for  # noqa: E402


def main() -> None:
    v = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
    rep = v.read("report")

    def patch(off: int, new: bytes) -> bytes:
        return rep[:off] + new + rep[off + len(new):]

    r = 37
    rec_len = int.from_bytes(rep[r + 5 : r + 8], "little")
    cases: dict[str, tuple[bytes, str]] = {
        "hex_text.bin": ((v.dir / v.files["report_hex"]).read_bytes(), "evidence.unsupported"),
        "truncated.bin": (rep[:-1], "evidence.malformed"),
        # zero padding after the signature is the NVML buffer's (accepted, a claim); anything else is not
        "trailing_byte.bin": (rep + b"\x01", "evidence.nvidia.trailing_data"),
        "zero_padding_past_nvml_buffer.bin": (rep + bytes(0x2000 + 1 - len(rep)), "evidence.nvidia.trailing_data"),
        "request_only.bin": (rep[:37], "evidence.malformed"),
        "spdm_1_2.bin": (patch(0, b"\x12") [:37] + b"\x12" + rep[38:], "evidence.unsupported"),
        "no_signature_requested.bin": (patch(2, b"\x00"), "evidence.unsupported"),
        "response_error.bin": (patch(r + 1, b"\x7f"), "evidence.unsupported"),
        "zero_blocks.bin": (patch(r + 4, b"\x00"), "evidence.malformed"),
        "record_len_huge.bin": (patch(r + 5, b"\xff\xff\xff"), "evidence.malformed"),
        "block_not_dmtf.bin": (patch(r + 9, b"\x02"), "evidence.unsupported"),
        "block_index_zero.bin": (patch(r + 8, b"\x00"), "evidence.malformed"),
        "nonce_zeroed.bin": (patch(4, bytes(32)), "evidence.signature_invalid"),
        "responder_nonce_zeroed.bin": (patch(r + 8 + rec_len, bytes(32)), "evidence.signature_invalid"),
        "signature_zeroed.bin": (rep[:-96] + bytes(96), "evidence.signature_invalid"),
        "zeros.bin": (bytes(len(rep)), "evidence.unsupported"),
    }
    index = {}
    for name, (data, code) in sorted(cases.items()):
        (HERE / name).write_bytes(data)
        index[name] = code
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
