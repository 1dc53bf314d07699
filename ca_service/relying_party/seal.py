"""Seal data to a certified key with HPKE (RFC 9180), and unseal it with that key.

Container (all integers big-endian; ``docs/relying-party.md`` describes it):

    magic      8 bytes  b"CASEAL\\x00\\x01"          (format version 1)
    kem, kdf, aead      3 x u16 RFC 9180 ids      (P-256: 0x0010, 0x0001, 0x0001; P-384: 0x0011, 0x0002, 0x0002)
    cert_sha256 32 bytes SHA-256 of the recipient certificate (DER)
    serial_len u8, serial  the recipient certificate's serial, lower-case hex ASCII
    chunk_size u32
    hpke_len u16, hpke     HPKE base-mode single-shot seal of a fresh 32-byte content key:
                           enc || ciphertext, info = b"ca-service/seal/v1" || cert_sha256 || serial
    then chunks: u32 length || AES-256-GCM(content key, nonce = u88 counter || u8 last, aad = header)

The header (everything before the chunks) is the AAD of every chunk, so no header byte can change;
the counter and the last flag make reordering, dropping and truncation fail. Files of any size
stream through in 64 KiB chunks.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.errors import SealRefused as SealError
from ca_service.errors import UnsealFailed as UnsealError

MAGIC = b"CASEAL\x00\x01"
INFO_PREFIX = b"ca-service/seal/v1"
CHUNK = 64 * 1024
_TAG = 16


@dataclass(frozen=True)
class SuiteIds:
    kem: int
    kdf: int
    aead: int


def _suite_for(key: object) -> tuple[SuiteIds, object]:
    from cryptography.hazmat.primitives import hpke

    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return SuiteIds(0x0010, 0x0001, 0x0001), hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256,
                                                                hpke.AEAD.AES_128_GCM)
        if isinstance(key.curve, ec.SECP384R1):
            return SuiteIds(0x0011, 0x0002, 0x0002), hpke.Suite(hpke.KEM.P384, hpke.KDF.HKDF_SHA384,
                                                                hpke.AEAD.AES_256_GCM)
    raise SealError("sealing needs a P-256 or P-384 key in the certificate (HPKE DHKEM); "
                    f"this one is {type(key).__name__}")


def _header(ids: SuiteIds, cert_sha256: bytes, serial: str, hpke_blob: bytes) -> bytes:
    s = serial.encode()
    return (MAGIC + struct.pack(">HHH", ids.kem, ids.kdf, ids.aead) + cert_sha256 + struct.pack(">B", len(s)) + s
            + struct.pack(">I", CHUNK) + struct.pack(">H", len(hpke_blob)) + hpke_blob)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunks(src: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    cur = src.read(CHUNK)
    while True:
        nxt = src.read(CHUNK)
        yield cur, not nxt
        if not nxt:
            return
        cur = nxt


def seal_stream(cert: x509.Certificate, src: BinaryIO, dst: BinaryIO) -> None:
    """Encrypt ``src`` to ``cert``'s public key. The caller has verified ``cert`` first
    (``relying_party.verify_certificate``); ``relying_party.seal`` does both."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        agreement = ku.key_agreement
    except x509.ExtensionNotFound:
        agreement = False
    if not agreement:
        raise SealError("the certificate's key usage does not allow keyAgreement: its key is not meant "
                        "to be sealed to")
    key = cert.public_key()
    ids, suite = _suite_for(key)
    cert_sha256 = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    serial = format(cert.serial_number, "x")
    content_key = os.urandom(32)
    blob = suite.encrypt(content_key, key, INFO_PREFIX + cert_sha256 + serial.encode())  # type: ignore[attr-defined]
    header = _header(ids, cert_sha256, serial, blob)
    dst.write(header)
    aead = AESGCM(content_key)
    for i, (chunk, last) in enumerate(_chunks(src)):
        ct = aead.encrypt(_nonce(i, last), chunk, header)
        dst.write(struct.pack(">I", len(ct)) + ct)


def _read(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise UnsealError("the sealed file is truncated")
    return data


def unseal_stream(private_key: object, src: BinaryIO, dst: BinaryIO) -> str:
    """Decrypt a sealed container with the recipient's private key; returns the recipient serial.

    Raises:
        UnsealError (``seal.open_failed``): not a container, the wrong key, or tampered bytes.
    """
    if _read(src, len(MAGIC)) != MAGIC:
        raise UnsealError("not a ca-service sealed file (bad magic or version)")
    kem, kdf, aead_id = struct.unpack(">HHH", _read(src, 6))
    ids, suite = _suite_for(private_key)
    if (kem, kdf, aead_id) != (ids.kem, ids.kdf, ids.aead):
        raise UnsealError("this key's HPKE suite is not the one the file was sealed with (wrong key)")
    cert_sha256 = _read(src, 32)
    serial = _read(src, _read(src, 1)[0]).decode("ascii", "replace")
    chunk_size = struct.unpack(">I", _read(src, 4))[0]
    if chunk_size != CHUNK:
        raise UnsealError("unsupported chunk size")
    blob = _read(src, struct.unpack(">H", _read(src, 2))[0])
    header = _header(ids, cert_sha256, serial, blob)
    try:
        content_key = suite.decrypt(blob, private_key, INFO_PREFIX + cert_sha256 + serial.encode())  # type: ignore[attr-defined]
    except Exception as exc:  # pyca raises InvalidTag or ValueError: both mean "not for this key"
        raise UnsealError("the key does not open this file (wrong key, or the header was changed)") from exc
    aead = AESGCM(content_key)
    counter = 0
    while True:
        head = src.read(4)
        if not head:
            raise UnsealError("the sealed file is truncated (no final chunk)")
        if len(head) != 4:
            raise UnsealError("the sealed file is truncated")
        length = struct.unpack(">I", head)[0]
        if length < _TAG or length > chunk_size + _TAG:
            raise UnsealError("a chunk has an impossible length (tampered)")
        ct = _read(src, length)
        last: bool | None = None
        plain = b""
        for flag in (False, True):
            try:
                plain = aead.decrypt(_nonce(counter, flag), ct, header)
            except InvalidTag:  # not this flag: try the other, then give up
                continue  # noqa: S112
            last = flag
            break
        if last is None:
            raise UnsealError("a chunk does not authenticate (tampered, reordered or the wrong file)")
        dst.write(plain)
        counter += 1
        if last:
            if src.read(1):
                raise UnsealError("bytes after the final chunk (tampered)")
            return serial
