"""The Turin ARK pin: a real Turin VCEK chains through the SNP chain builder to the pinned ARK."""

from __future__ import annotations

import hashlib
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.errors import EvidenceError
from ca_service.evidence.snp.chain import build_chain, check_validity
from ca_service.evidence.trust import AMD_ARK_TURIN, DEFAULT_ROOTS

HERE = Path(__file__).resolve().parent / "amd-turin"


def _load():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD VCEK serials are not positive (vectors README)
        vcek = x509.load_der_x509_certificate((HERE / "vcek.der").read_bytes())
    chain = tuple(x509.load_pem_x509_certificates((HERE / "cert_chain.pem").read_bytes()))
    return vcek, chain


def test_pin_is_the_ark():
    ark = x509.load_pem_x509_certificate((HERE / "ark.pem").read_bytes())
    assert hashlib.sha256(ark.public_bytes(Encoding.DER)).hexdigest() == AMD_ARK_TURIN
    assert AMD_ARK_TURIN in DEFAULT_ROOTS.amd


def test_turin_vcek_chains_to_the_pinned_ark():
    vcek, chain = _load()
    verified = build_chain(vcek, chain, DEFAULT_ROOTS.amd)
    check_validity(verified, datetime(2026, 1, 1, tzinfo=UTC))
    assert verified.line.name == "Turin"
    assert "ARK-Turin" in verified.ark.subject.rfc4514_string()
    assert "SEV-Turin" in verified.intermediate.subject.rfc4514_string()
    assert hashlib.sha256(verified.ark.public_bytes(Encoding.DER)).hexdigest() == AMD_ARK_TURIN


def test_turin_unpinned_is_refused():
    vcek, chain = _load()
    with pytest.raises(EvidenceError) as ei:
        build_chain(vcek, chain, frozenset({"00" * 32}))
    assert ei.value.code == "evidence.root_untrusted"
