"""C2SP signed notes and checkpoints, with the Go sumdb/note known answer (golang.org/x/mod)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ca_service.errors import CheckpointInvalid, CheckpointSignatureInvalid
from ca_service.tlog.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)

# golang.org/x/mod/sumdb/note, package documentation example.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann "
    + "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_signer() -> NoteSigner:
    seed = base64.b64decode(GO_SKEY_B64)[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_go_known_answer() -> None:
    signer = _go_signer()
    assert signer.verifier.vkey == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_NOTE
    assert NoteVerifier.from_vkey(GO_VKEY).verify(GO_NOTE) == GO_TEXT


def test_checkpoint_round_trip_and_foreign_signatures_ignored() -> None:
    signer = NoteSigner("example.com/log", Ed25519PrivateKey.generate())
    cp = Checkpoint("example.com/log", 20852163, bytes(range(32)))
    note = sign_checkpoint(cp, signer)
    root_b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert note.startswith(f"example.com/log\n20852163\n{root_b64}\n\n\u2014 ")
    witness = NoteSigner("witness.example", Ed25519PrivateKey.generate())
    cosigned = note + witness.sign(cp.body()).split("\n\n", 1)[1]
    for n in (note, cosigned):
        assert open_checkpoint(n, signer.verifier, origin="example.com/log") == cp
    with pytest.raises(CheckpointInvalid):
        open_checkpoint(note, signer.verifier, origin="other.example/log")
    with pytest.raises(CheckpointSignatureInvalid):
        open_checkpoint(note, witness.verifier)


@given(st.integers(0, len(GO_NOTE.encode()) - 1), st.integers(1, 255))
def test_every_byte_mutation_is_refused(pos: int, flip: int) -> None:
    raw = bytearray(GO_NOTE.encode())
    raw[pos] ^= flip
    try:
        mutated = raw.decode()
    except UnicodeDecodeError:
        return
    with pytest.raises((CheckpointInvalid, CheckpointSignatureInvalid)):
        NoteVerifier.from_vkey(GO_VKEY).verify(mutated)


def test_signature_with_non_zero_padding_bits_is_refused() -> None:
    # the last base64 character of the Go note's signature carries 2 padding bits: flipping one
    # decodes to the same signature bytes, so only a canonical-form check refuses it
    raw = bytearray(GO_NOTE.encode())
    raw[207] ^= 2
    with pytest.raises(CheckpointInvalid, match="canonical"):
        NoteVerifier.from_vkey(GO_VKEY).verify(raw.decode())


def test_vkey_with_plus_in_base64() -> None:
    # transparency-dev/formats note tests: the base64 of this key contains a '+'.
    v = NoteVerifier.from_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert v.name == "TEST" and v.vkey == "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong algorithm
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(CheckpointInvalid):
        NoteVerifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "body",
    [
        "o\n01\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",  # leading zero
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n",  # unpadded
        "o\n1\nAAEC\n",  # short root
        "o\n1\n",
        "\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ],
)
def test_bad_checkpoint_bodies(body: str) -> None:
    with pytest.raises(CheckpointInvalid):
        Checkpoint.parse(body)
