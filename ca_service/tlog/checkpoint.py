"""C2SP tlog-checkpoint bodies and C2SP signed notes with Ed25519 (PURE: no IO).

- checkpoint body (c2sp.org/tlog-checkpoint): ``<origin>\\n<size>\\n<base64 root>\\n[extension lines]``
- signed note (c2sp.org/signed-note): ``<text>\\n`` then one ``— <name> <base64(key id || sig)>\\n``
  line per signature; the key id of an Ed25519 key is the first 4 bytes of
  ``SHA-256(<name> || 0x0A || 0x01 || <32-byte public key>)`` and the signature covers the text.
- verifier key: ``<name>+<hex key id>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca_service.errors import CheckpointInvalid, CheckpointSignatureInvalid

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE = re.compile(r"0|[1-9]\d{0,19}")
_MAX_NOTE = 1 << 20


def _b64decode(s: str) -> bytes:
    """Standard base64 in its one canonical form: padding bits that are not zero ("nAM=" vs "nAO=")
    decode to the same bytes, so a lenient decoder would let two different notes carry one signature."""
    try:
        out = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointInvalid("not standard base64") from exc
    if base64.b64encode(out).decode("ascii") != s:
        raise CheckpointInvalid("not canonical base64 (non-zero padding bits)")
    return out


def _check_name(name: str) -> None:
    # signed-note: a key name is non-empty, with no Unicode spaces and no "+".
    if not name or "+" in name or any(c.isspace() for c in name):
        raise CheckpointInvalid("key name must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and root hash, plus optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointInvalid("origin must be one non-empty line")
        if self.size < 0 or len(self.root_hash) != 32:
            raise CheckpointInvalid("size must be non-negative and the root 32 bytes")
        if any(not e or "\n" in e for e in self.extensions):
            raise CheckpointInvalid("extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text (tlog-checkpoint), ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of a verified note).

        Raises:
            CheckpointInvalid (``log.checkpoint_invalid``): not a tlog-checkpoint body.
        """
        if not text.endswith("\n"):
            raise CheckpointInvalid("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointInvalid("checkpoint needs origin, size and root lines")
        origin, size, root, *ext = lines
        if not _SIZE.fullmatch(size):
            raise CheckpointInvalid("checkpoint size is not a canonical decimal")
        root_hash = _b64decode(root)
        if len(root_hash) != 32 or base64.b64encode(root_hash).decode() != root:
            raise CheckpointInvalid("checkpoint root is not a canonical base64 SHA-256 hash")
        return cls(origin=origin, size=int(size), root_hash=root_hash, extensions=tuple(ext))


def key_id(name: str, public_key: bytes) -> bytes:
    """signed-note key id: first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    """A log's verification key (the ``LogKey`` trust domain): name and Ed25519 public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise CheckpointInvalid("Ed25519 public keys are 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """``<name>+<hex key id>+<base64(0x01 || public key)>``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string, checking that its key id matches the key.

        Raises:
            CheckpointInvalid (``log.checkpoint_invalid``): malformed or unsupported key.
        """
        parts = vkey.strip().split("+", 2)  # the base64 may hold "+", the name may not
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise CheckpointInvalid("vkey must be <name>+<8 hex>+<base64>")
        blob = _b64decode(parts[2])
        if len(blob) != 33 or blob[0] != ALG_ED25519:
            raise CheckpointInvalid("only Ed25519 (0x01) verifier keys are supported")
        verifier = cls(name=parts[0], public_key=blob[1:])
        if verifier.key_id.hex() != parts[1]:
            raise CheckpointInvalid("vkey key id does not match its key")
        return verifier

    @classmethod
    def from_public_key(cls, name: str, key: Ed25519PublicKey) -> NoteVerifier:
        return cls(name=name, public_key=_raw(key))

    def verify(self, note: str) -> str:
        """Return the note's text if one signature line is a valid signature by this key.

        Signature lines from other keys (e.g. witness cosignatures) are ignored.

        Raises:
            CheckpointInvalid (``log.checkpoint_invalid``): malformed note.
            CheckpointSignatureInvalid (``log.checkpoint_signature_invalid``): no valid signature.
        """
        text, sigs = split_note(note)
        pub = Ed25519PublicKey.from_public_bytes(self.public_key)
        for name, blob in sigs:
            if name != self.name or len(blob) < 4 or not hmac.compare_digest(blob[:4], self.key_id):
                continue
            try:
                pub.verify(blob[4:], text.encode())
            except InvalidSignature as exc:
                raise CheckpointSignatureInvalid("note signature by the log key does not verify") from exc
            return text
        raise CheckpointSignatureInvalid("note carries no signature by the log key", key=self.name)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and ``(name, key id || signature)`` lines.

    Raises:
        CheckpointInvalid (``log.checkpoint_invalid``): not a signed note.
    """
    if len(note) > _MAX_NOTE or not note.endswith("\n"):
        raise CheckpointInvalid("note must end with a newline and be at most 1 MiB")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointInvalid("note has no blank line before its signatures")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    sigs: list[tuple[str, bytes]] = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise CheckpointInvalid("signature line must start with an em dash and a space")
        fields = line[len(SIG_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise CheckpointInvalid("signature line must be '— <name> <base64>'")
        _check_name(fields[0])
        sigs.append((fields[0], _b64decode(fields[1])))
    if not sigs:
        raise CheckpointInvalid("note has no signatures")
    return text, sigs


@dataclass(frozen=True)
class NoteSigner:
    """Signs note texts with the log's Ed25519 key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.name, self.private_key.public_key())

    def sign(self, text: str) -> str:
        """Return the signed note for ``text`` (which must end with a newline, no blank lines)."""
        if not text.endswith("\n") or "\n\n" in text:
            raise CheckpointInvalid("note text must end with a newline and hold no blank line")
        sig = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + sig).decode()
        return f"{text}\n{SIG_PREFIX}{self.name} {blob}\n"


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """A signed checkpoint note."""
    return signer.sign(checkpoint.body())


def open_checkpoint(note: str, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint and parse it; the origin must match when given.

    Raises:
        CheckpointInvalid, CheckpointSignatureInvalid: see :meth:`NoteVerifier.verify`.
    """
    cp = Checkpoint.parse(verifier.verify(note))
    if origin is not None and cp.origin != origin:
        raise CheckpointInvalid("checkpoint origin is not this log's", origin=cp.origin)
    return cp
