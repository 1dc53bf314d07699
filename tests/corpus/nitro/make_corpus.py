"""Regenerate the crafted Nitro inputs in this folder (from ../shared/vectors/nitro/dstack-nsm-2025-12-25).

Run from the repository root: ``python tests/corpus/nitro/make_corpus.py``. ``index.json`` maps each
file to the error code the verifier must give it at the vector's verify_time (checked by
tests/unit/evidence/nitro/test_nitro_fuzz.py). Edits keep the original signature, so anything that
still parses is refused as ``evidence.signature_invalid``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cbor2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.vectors.manifest import vectors_for  # noqa: E402


def main() -> None:
    v = next(v for v in vectors_for("nitro") if v.id == "nitro/dstack-nsm-2025-12-25")
    cose = v.read("cose_sign1")
    arr = cbor2.loads(cose)
    doc = cbor2.loads(arr[2])

    def with_doc(**over: object) -> bytes:
        d = dict(doc)
        d.update(over)
        return bytes(cbor2.dumps([arr[0], arr[1], cbor2.dumps(d), arr[3]]))

    dbg = dict(doc["pcrs"])
    dbg.update({0: bytes(48), 1: bytes(48), 2: bytes(48)})
    cases: dict[str, tuple[bytes, str]] = {
        "dstack_framed.bin": (v.read("raw"), "evidence.malformed"),
        "truncated.bin": (cose[:-1], "evidence.malformed"),
        "trailing_byte.bin": (cose + b"\x00", "evidence.malformed"),
        "empty_array.bin": (b"\x84\x40\xa0\x40\x40", "evidence.malformed"),
        "tag_98.bin": (b"\xd8\x62" + cose, "evidence.malformed"),
        "alg_es256.bin": (bytes(cbor2.dumps([cbor2.dumps({1: -7}), {}, arr[2], arr[3]])), "evidence.unsupported"),
        "no_alg.bin": (bytes(cbor2.dumps([b"", {}, arr[2], arr[3]])), "evidence.malformed"),
        "short_signature.bin": (bytes(cbor2.dumps([arr[0], {}, arr[2], arr[3][:64]])), "evidence.malformed"),
        "payload_not_map.bin": (bytes(cbor2.dumps([arr[0], {}, cbor2.dumps([1]), arr[3]])), "evidence.malformed"),
        "digest_sha256.bin": (with_doc(digest="SHA256"), "evidence.unsupported"),
        "extra_field.bin": (with_doc(debug=False), "evidence.malformed"),
        "reencoded_payload.bin": (with_doc(), "evidence.signature_invalid"),
        "pcrs_zeroed_debug.bin": (with_doc(pcrs=dbg), "evidence.signature_invalid"),
        "nonce_added.bin": (with_doc(nonce=b"\x11" * 32), "evidence.signature_invalid"),
        "cabundle_root_only.bin": (with_doc(cabundle=doc["cabundle"][:1]), "evidence.signature_invalid"),
        "certificate_garbage.bin": (with_doc(certificate=b"\x30\x03\x02\x01\x01"), "evidence.malformed"),
        "signature_zero.bin": (bytes(cbor2.dumps([arr[0], {}, arr[2], bytes(96)])), "evidence.signature_invalid"),
    }
    index = {}
    for name, (data, code) in sorted(cases.items()):
        (HERE / name).write_bytes(data)
        index[name] = code
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
