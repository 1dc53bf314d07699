"""Nitro verifier on documents signed by a fake NSM: each rule refused with its own code."""

from __future__ import annotations

from datetime import timedelta

import cbor2
import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nitro.chain import clear_caches
from ca_service.evidence.nitro.parse import parse_evidence
from ca_service.evidence.nitro.verify import verify_genuine, verify_nitro
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.unit.evidence.nitro.fakenitro import FakeNsm


@pytest.fixture(scope="module")
def nsm() -> FakeNsm:
    return FakeNsm()


def code(nsm: FakeNsm, evidence: bytes, **kw: object) -> str:
    try:
        verify("nitro", evidence, at=kw.pop("at", nsm.at), roots=kw.pop("roots", nsm.roots), **kw)  # type: ignore[arg-type]
    except EvidenceError as exc:
        return exc.code
    return "ok"


def test_untagged_and_tagged_both_verify(nsm: FakeNsm) -> None:
    ud = bytes(range(64))
    for tagged in (False, True):
        ev = nsm.sign(nsm.document(user_data=ud, nonce=b"\x01" * 32, public_key=b"\x04" * 97), tagged=tagged)
        r = verify_nitro(ev, Collateral(), nsm.at, nsm.roots)
        assert r.report_data == ud
        assert r.claims["cose_tagged"] is tagged
        assert r.claims["nonce"] == "01" * 32 and r.claims["public_key"] == "04" * 97
        assert r.claims["pcrs"]["0"] == "01" * 48 and r.claims["debug"] is False
        assert all(c.passed for c in r.checks if c.name != "nitro.revocation")
        assert [c.name for c in r.checks if c.skipped] == ["nitro.revocation"]


def test_report_data_is_user_data_and_nonce_checks_it(nsm: FakeNsm) -> None:
    ud = bytes(range(64))
    ev = nsm.sign(nsm.document(user_data=ud, nonce=b"\xee" * 32))
    assert code(nsm, ev, nonce=ud[:32]) == "ok"
    assert code(nsm, ev, nonce=b"\xee" * 32) == "evidence.report_data_mismatch"  # not the nonce field
    no_ud = nsm.sign(nsm.document())
    assert verify_nitro(no_ud, Collateral(), nsm.at, nsm.roots).report_data == b""
    assert code(nsm, no_ud, nonce=b"\x00" * 32) == "evidence.report_data_mismatch"


def test_debug_enclave(nsm: FakeNsm) -> None:
    pcrs = {i: bytes(48) for i in range(16)}
    ev = nsm.sign(nsm.document(pcrs=pcrs))
    assert code(nsm, ev) == "evidence.debug_enabled"
    r = verify_genuine(ev, Collateral(), nsm.at, nsm.roots)
    assert r.claims["debug"] is True and [c.name for c in r.checks if c.failed] == ["nitro.debug"]
    # PCR0 alone zero is not debug mode.
    pcrs[1] = b"\x01" * 48
    assert code(nsm, nsm.sign(nsm.document(pcrs=pcrs))) == "ok"


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"digest": "SHA256"}, "evidence.unsupported"),
        ({"digest": 1}, "evidence.malformed"),
        ({"module_id": ""}, "evidence.malformed"),
        ({"timestamp": 0}, "evidence.malformed"),
        ({"timestamp": "1"}, "evidence.malformed"),
        ({"pcrs": {}}, "evidence.malformed"),
        ({"pcrs": {32: bytes(48)}}, "evidence.malformed"),
        ({"pcrs": {0: bytes(47)}}, "evidence.malformed"),
        ({"cabundle": []}, "evidence.malformed"),
        ({"cabundle": [b"x" * 1025]}, "evidence.malformed"),
        ({"certificate": b"not der"}, "evidence.malformed"),
        ({"user_data": b"x" * 513}, "evidence.malformed"),
        ({"nonce": "text"}, "evidence.malformed"),
        ({"public_key": b""}, "evidence.malformed"),
        ({"extra": 1}, "evidence.malformed"),
        ({"module_id": ...}, "evidence.malformed"),
        ({"public_key": ...}, "ok"),  # optional keys may be absent
    ],
)
def test_document_rules(nsm: FakeNsm, over: dict[str, object], expected: str) -> None:
    assert code(nsm, nsm.sign(nsm.document(**over))) == expected


def test_cose_rules(nsm: FakeNsm) -> None:
    doc = nsm.document()
    assert code(nsm, nsm.sign(doc, alg=-7)) == "evidence.unsupported"  # ES256
    ev = nsm.sign(doc)
    assert code(nsm, ev + b"\x00") == "evidence.malformed"
    assert code(nsm, b"\x00" + ev) == "evidence.malformed"
    assert code(nsm, cbor2.dumps(cbor2.CBORTag(98, cbor2.loads(ev)))) == "evidence.malformed"
    assert code(nsm, b"\xd9\x00\x62" + ev) == "evidence.malformed"
    arr = cbor2.loads(ev)
    assert code(nsm, cbor2.dumps([arr[0], arr[1], arr[2], arr[3][:95]])) == "evidence.malformed"
    assert code(nsm, cbor2.dumps([arr[0], arr[1], arr[2]])) == "evidence.malformed"
    assert code(nsm, cbor2.dumps([arr[0], [], arr[2], arr[3]])) == "evidence.malformed"
    assert code(nsm, cbor2.dumps([cbor2.dumps({4: b"k"}), {}, arr[2], arr[3]])) == "evidence.malformed"
    assert parse_evidence(ev).cose.sig_structure().startswith(b"\x84\x6aSignature1")


def test_signed_by_another_key(nsm: FakeNsm) -> None:
    assert code(nsm, nsm.sign(nsm.document(), key=nsm.inter_key)) == "evidence.signature_invalid"


def test_chain_rules(nsm: FakeNsm) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    ev = nsm.sign(nsm.document())
    assert code(nsm, ev, roots=DEFAULT_ROOTS) == "evidence.root_untrusted"
    other = FakeNsm()
    root_der, inter_der = (c.public_bytes(Encoding.DER) for c in (nsm.root, nsm.inter))
    # The intermediate of another NSM under our pinned root: chain broken.
    swapped = nsm.document(cabundle=[root_der, other.inter.public_bytes(Encoding.DER)])
    assert code(nsm, nsm.sign(swapped)) == "evidence.chain_invalid"
    # Bundle without the root: the first entry is not pinned.
    assert code(nsm, nsm.sign(nsm.document(cabundle=[inter_der]))) == "evidence.root_untrusted"
    assert code(nsm, nsm.sign(nsm.document(cabundle=[root_der, inter_der, root_der]))) == "evidence.chain_invalid"
    # Attestation certificate that is itself a CA.
    ca_leaf = FakeNsm(root_key=nsm.root_key, inter_key=nsm.inter_key, leaf_ca=True)
    doc = ca_leaf.document(cabundle=[root_der, inter_der])
    assert code(nsm, ca_leaf.sign(doc)) == "evidence.chain_invalid"


def test_validity_window_and_cache(nsm: FakeNsm) -> None:
    ev = nsm.sign(nsm.document())
    clear_caches()
    assert code(nsm, ev) == "ok"
    assert code(nsm, ev) == "ok"  # warm
    assert code(nsm, ev, at=nsm.at + timedelta(hours=3)) == "evidence.certificate_expired"
    assert code(nsm, ev, at=nsm.at - timedelta(hours=1)) == "evidence.certificate_expired"
    assert code(nsm, ev, roots=DEFAULT_ROOTS) == "evidence.root_untrusted"  # cached chain, pins re-checked
    late = nsm.sign(nsm.document(timestamp=int((nsm.at + timedelta(hours=4)).timestamp() * 1000)))
    assert code(nsm, late) == "evidence.certificate_expired"
