"""The PCK SGX extension parser (strict DER walker) against pyasn1 as an oracle, on every PCK
certificate of the real vectors, and on mutations of them (issue 15: the walker replaced pyasn1)."""

from __future__ import annotations

import random

import pytest
from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder

from ca_service.errors import EvidenceMalformed
from ca_service.evidence.intel import der
from ca_service.evidence.intel.parse import parse_quote
from ca_service.evidence.intel.pck import SGX_EXTENSION_OID, PckInfo, load_pem_chain, parse_pck_extension
from tests.vectors.manifest import vectors_for


def _pck_leaves() -> list[tuple[str, x509.Certificate]]:
    out = {}
    for tee in ("tdx", "sgx"):
        for v in vectors_for(tee):
            try:
                quote = parse_quote(v.read("quote"))
            except Exception:  # noqa: BLE001 - vectors that do not parse are other tests' business
                continue
            leaf = load_pem_chain(quote.cert_data, "PCK")[0]
            out[leaf.fingerprint(leaf.signature_hash_algorithm)] = (v.path, leaf)  # type: ignore[arg-type]
    return list(out.values())


LEAVES = _pck_leaves()


def _oracle(raw: bytes) -> PckInfo:
    """The previous pyasn1-based reading of the same fields."""
    top, rest = der_decoder.decode(raw)
    assert not rest
    entries = {str(item[0]): item[1] for item in top}
    tcb = {str(item[0]): item[1] for item in entries["1.2.840.113741.1.13.1.2"]}
    return PckInfo(ppid=bytes(entries["1.2.840.113741.1.13.1.1"]),
                   cpu_svn=tuple(int(tcb[f"1.2.840.113741.1.13.1.2.{i}"]) for i in range(1, 17)),
                   pce_svn=int(tcb["1.2.840.113741.1.13.1.2.17"]),
                   pce_id=bytes(entries["1.2.840.113741.1.13.1.3"]),
                   fmspc=bytes(entries["1.2.840.113741.1.13.1.4"]))


def _raw(cert: x509.Certificate) -> bytes:
    ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


def test_there_are_pck_certificates_to_compare() -> None:
    assert len(LEAVES) >= 3


@pytest.mark.parametrize(("path", "cert"), LEAVES, ids=[p for p, _ in LEAVES])
def test_walker_reads_what_pyasn1_reads(path: str, cert: x509.Certificate) -> None:
    assert parse_pck_extension(cert) == _oracle(_raw(cert))


def _parse_raw(raw: bytes) -> PckInfo:
    """parse_pck_extension's body on bytes (the certificate wrapper only finds the extension)."""

    class _Ext:
        value = x509.UnrecognizedExtension(SGX_EXTENSION_OID, raw)

    class _Exts:
        def get_extension_for_oid(self, oid: x509.ObjectIdentifier) -> object:
            return _Ext()

    class _Cert:
        extensions = _Exts()

    return parse_pck_extension(_Cert())  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "cert"), LEAVES[:2], ids=[p for p, _ in LEAVES[:2]])
def test_mutations_parse_like_the_oracle_or_are_malformed(path: str, cert: x509.Certificate) -> None:
    """Truncations and byte flips: either both parsers read the same values, or ours refuses with
    evidence.malformed (never another exception, never a value pyasn1 would not read)."""
    raw = _raw(cert)
    rng = random.Random(15)
    cases = [raw[:n] for n in range(0, len(raw), 7)]
    for _ in range(300):
        b = bytearray(raw)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    refused = 0
    for case in cases:
        try:
            ours = _parse_raw(case)
        except EvidenceMalformed:
            refused += 1
            continue
        assert ours == _oracle(case)
    assert refused > len(cases) // 4  # most damage is structural


def test_der_reader_refuses_non_der() -> None:
    with pytest.raises(der.DerError):
        der.read_all(b"\x30\x80\x00\x00")  # indefinite length
    with pytest.raises(der.DerError):
        der.read_all(b"\x04\x81\x01\x00")  # long form for a short length
    with pytest.raises(der.DerError):
        der.read_all(b"\x04\x05\x00")  # runs past the end
    with pytest.raises(der.DerError):
        der.integer(der.Tlv(der.INTEGER, b"\x00\x01"))  # not minimal
    assert der.integer(der.Tlv(der.INTEGER, b"\x00\x80")) == 128
    assert der.integer(der.Tlv(der.INTEGER, b"\xff")) == -1
    assert der.oid(der.Tlv(der.OID, bytes.fromhex("2a864886f84d010d01"))) == "1.2.840.113741.1.13.1"
