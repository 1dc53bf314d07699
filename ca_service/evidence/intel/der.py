"""A minimal strict DER reader (ITU-T X.690 section 8 and 10) for the Intel SGX PCK extension (PURE).

The SGX extension is a few dozen TLVs of four kinds (SEQUENCE, OBJECT IDENTIFIER, INTEGER,
OCTET STRING / ENUMERATED / BOOLEAN kept as bytes). Walking them directly costs a small fraction
of a schemaless pyasn1 decode, which was ~40% of verifying a TDX quote against unseen collateral
(issue 15). Only DER is accepted: definite, minimal lengths and single-byte tags; anything else
raises :class:`DerError`, which the caller turns into ``evidence.malformed``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

BOOLEAN = 0x01
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
ENUMERATED = 0x0A
SEQUENCE = 0x30
# The only tags of the SGX extension (PCK profile 1.5): universal, primitive but for SEQUENCE.
EXTENSION_TAGS = frozenset({BOOLEAN, INTEGER, OCTET_STRING, OID, ENUMERATED, SEQUENCE})

_MAX_LENGTH_BYTES = 4  # lengths up to 4 GiB; an extension is a few hundred bytes


class DerError(ValueError):
    """Not DER of the expected shape."""


class Tlv(NamedTuple):
    tag: int
    value: bytes
    children: tuple[Tlv, ...] | None = None  # a SEQUENCE's, once read_tree has read them


_new = tuple.__new__  # builds a Tlv without the Python-level __new__ a NamedTuple adds
# A byte that ends an arc (top bit clear) followed by 0x80: the next arc has a leading zero group.
_NON_MINIMAL_ARC = re.compile(rb"[\x00-\x7f]\x80")


def _tlv_at(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The TLV at ``pos``: its tag and where its value starts and stops (X.690 8.1, DER lengths).

    Raises:
        DerError: a truncated TLV, a multi-byte tag, an indefinite or non-minimal length.
    """
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used in this structure")
    if pos + 1 >= end:
        raise DerError("truncated length")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0:
            raise DerError("indefinite length is not DER")  # X.690 10.1
        if n > _MAX_LENGTH_BYTES or pos + n > end:
            raise DerError("truncated or oversized length")
        length = int.from_bytes(data[pos:pos + n], "big")
        if data[pos] == 0 or length < 0x80:
            raise DerError("length not in minimal form")  # X.690 10.1
        pos += n
    if pos + length > end:
        raise DerError("value runs past the end")
    return tag, pos, pos + length


def read_all(data: bytes) -> list[Tlv]:
    """The TLVs that make up ``data`` exactly (X.690 8.1), in order.

    Raises:
        DerError: a truncated TLV, a multi-byte tag, an indefinite or non-minimal length.
    """
    out = []
    pos, end = 0, len(data)
    while pos < end:
        tag, start, pos = _tlv_at(data, pos, end)
        out.append(_new(Tlv, (tag, data[start:pos], None)))
    return out


def read_tree(data: bytes, allowed: frozenset[int], depth: int = 8) -> list[Tlv]:
    """:func:`read_all`, and every TLV below it checked too: each tag in ``allowed``, SEQUENCEs
    read recursively (at most ``depth`` deep) and kept as ``children``, BOOLEANs one byte of 0x00
    or 0xFF (X.690 11.1), OBJECT IDENTIFIERs well-formed.

    Raises:
        DerError: anything :func:`read_all` refuses, at any depth, or a tag not in ``allowed``.
    """
    out = []
    pos, end = 0, len(data)
    while pos < end:
        tag, start, pos = _tlv_at(data, pos, end)
        value = data[start:pos]
        if tag not in allowed:
            raise DerError(f"tag {tag:#04x} does not belong in this structure")
        children = None
        if tag == SEQUENCE:
            if depth <= 0:
                raise DerError("nested too deep")
            children = tuple(read_tree(value, allowed, depth - 1))
        elif tag == BOOLEAN and value not in (b"\x00", b"\xff"):
            raise DerError("BOOLEAN is not DER")
        elif tag == OID:
            check_oid(value)
        out.append(_new(Tlv, (tag, value, children)))
    return out


def signed_part(data: bytes) -> bytes:
    """The complete encoding of the first element of a SIGNED SEQUENCE (RFC 5280 4.1, 5.1): the
    exact bytes of a certificate's tbsCertificate or a CRL's tbsCertList, as they were signed.

    Raises:
        DerError: ``data`` is not one SEQUENCE whose content starts with a SEQUENCE.
    """
    end = len(data)
    if end < 2:
        raise DerError("truncated")
    tag, start, stop = _tlv_at(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise DerError("not one SEQUENCE")
    if start >= stop:
        raise DerError("empty SEQUENCE")
    tag, _, inner_stop = _tlv_at(data, start, stop)
    if tag != SEQUENCE:
        raise DerError("the signed part is not a SEQUENCE")
    return data[start:inner_stop]


def elements(data: bytes) -> list[bytes]:
    """The complete encodings of the TLVs inside the one SEQUENCE that ``data`` is, in order.

    Raises:
        DerError: ``data`` is not exactly one SEQUENCE of TLVs.
    """
    end = len(data)
    if end < 2:
        raise DerError("truncated")
    tag, pos, stop = _tlv_at(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise DerError("not one SEQUENCE")
    out = []
    while pos < stop:
        first = pos
        _, _, pos = _tlv_at(data, pos, stop)
        out.append(data[first:pos])
    return out


def certificate_names(tbs: bytes) -> tuple[bytes, bytes]:
    """The issuer and subject Names of a tbsCertificate, as encoded (RFC 5280 4.1: [0] version,
    serialNumber, signature, issuer, validity, subject, ...).

    Raises:
        DerError: not of that shape.
    """
    els = elements(tbs)
    if els and els[0][0] == 0xA0:  # [0] EXPLICIT version; absent in a v1 certificate
        els = els[1:]
    if len(els) < 5 or els[0][0] != INTEGER or any(e[0] != SEQUENCE for e in els[1:5]):
        raise DerError("not a tbsCertificate")
    return els[2], els[4]


def crl_issuer(tbs: bytes) -> bytes:
    """The issuer Name of a tbsCertList, as encoded (RFC 5280 5.1: [version], signature, issuer,
    thisUpdate, ...).

    Raises:
        DerError: not of that shape.
    """
    els = elements(tbs)
    if els and els[0][0] == INTEGER:  # version, present in a v2 CRL
        els = els[1:]
    if len(els) < 3 or els[0][0] != SEQUENCE or els[1][0] != SEQUENCE or els[2][0] not in (0x17, 0x18):
        raise DerError("not a tbsCertList")
    return els[1]


def expect(tlv: Tlv, tag: int, what: str) -> bytes:
    if tlv.tag != tag:
        raise DerError(f"{what}: tag {tlv.tag:#04x}, expected {tag:#04x}")
    return tlv.value


def sequence(tlv: Tlv, what: str) -> list[Tlv]:
    value = expect(tlv, SEQUENCE, what)
    return list(tlv.children) if tlv.children is not None else read_all(value)


def check_oid(raw: bytes) -> None:
    """OBJECT IDENTIFIER content octets: non-empty, last arc complete, every arc minimal (X.690 8.19.2)."""
    if not raw or raw[-1] & 0x80:
        raise DerError("empty or truncated object identifier")
    if raw[0] == 0x80 or _NON_MINIMAL_ARC.search(raw):
        raise DerError("object identifier arc not minimal")


def oid(tlv: Tlv) -> str:
    """Dotted form of an OBJECT IDENTIFIER (X.690 8.19)."""
    raw = expect(tlv, OID, "object identifier")
    if not raw or raw[-1] & 0x80:
        raise DerError("empty or truncated object identifier")
    arcs: list[int] = []
    value = 0
    start = True
    for b in raw:
        if start and b == 0x80:
            raise DerError("object identifier arc not minimal")
        value = (value << 7) | (b & 0x7F)
        start = not b & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def encode_oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER (X.690 8.19), to compare against raw values."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not an object identifier: {dotted}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def integer(tlv: Tlv) -> int:
    """A minimal two's-complement INTEGER (X.690 8.3)."""
    raw = expect(tlv, INTEGER, "integer")
    if not raw:
        raise DerError("empty integer")
    if len(raw) > 1 and ((raw[0] == 0 and not raw[1] & 0x80) or (raw[0] == 0xFF and raw[1] & 0x80)):
        raise DerError("integer not minimal")
    return int.from_bytes(raw, "big", signed=True)
