"""The ``c2sp.org/tlog-proof@v1`` text bundle: checkpoint + index + inclusion proof (PURE).

```
c2sp.org/tlog-proof@v1
[extra <base64>]
index <decimal>
<base64 hash>            (inclusion proof, RFC 9162 order, one per line)

<signed checkpoint note>
```
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ca_service.errors import CheckpointInvalid
from ca_service.tlog import merkle
from ca_service.tlog.checkpoint import Checkpoint, NoteVerifier, open_checkpoint

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9]\d{0,19})")


@dataclass(frozen=True)
class ProofBundle:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @classmethod
    def parse(cls, text: str) -> ProofBundle:
        """Parse a bundle (no signature or proof checked yet).

        Raises:
            CheckpointInvalid (``log.checkpoint_invalid``): not a tlog-proof@v1 bundle.
        """
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise CheckpointInvalid("proof bundle has no checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise CheckpointInvalid("not a c2sp.org/tlog-proof@v1 bundle")
        rest = lines[1:]
        extra = None
        try:
            if rest and rest[0].startswith("extra "):
                extra = base64.b64decode(rest.pop(0)[6:], validate=True)
            if not rest or not (m := _INDEX.fullmatch(rest[0])):
                raise CheckpointInvalid("proof bundle needs an index line")
            hashes = tuple(base64.b64decode(h, validate=True) for h in rest[1:])
        except (binascii.Error, ValueError) as exc:
            raise CheckpointInvalid("proof bundle holds invalid base64") from exc
        if any(len(h) != merkle.HASH_SIZE for h in hashes):
            raise CheckpointInvalid("proof hashes must be 32 bytes")
        return cls(index=int(m.group(1)), hashes=hashes, checkpoint_note=note, extra=extra)

    def verify(self, leaf: bytes, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
        """Check the checkpoint signature, then that ``leaf`` is at ``index`` under its root.

        Raises:
            CheckpointInvalid, CheckpointSignatureInvalid, InclusionProofInvalid.
        """
        cp = open_checkpoint(self.checkpoint_note, verifier, origin)
        merkle.verify_inclusion(merkle.leaf_hash(leaf), self.index, cp.size, list(self.hashes), cp.root_hash)
        return cp
