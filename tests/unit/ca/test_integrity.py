"""The pure integrity-report layer: parse (canonical, schema), sign/verify, the certificate, offline checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca_service.ca import integrity as pure
from ca_service.errors import CAServiceError

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ENGINE = "sha384:" + "ab" * 48
DATASET = "sha256:" + "cd" * 32
ARGS = "sha256:" + "ef" * 32
DOCS = Path(__file__).resolve().parents[3] / "docs"


def _code(exc_info) -> str:
    return exc_info.value.code


def _doc(**over) -> dict:
    doc = {"v": 1, "order_id": "order-1", "loader_certificate_serial": "1a2b", "issued_at": "2026-03-01T12:00:00Z",
           "components": [{"name": "engine", "digest": ENGINE}, {"name": "dataset/clinic-a", "digest": DATASET}],
           "arguments_digest": ARGS}
    return doc | over


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(key, issuer_key, *, subject="loader", issuer="issuing", ca=False, serial=0x1A2B, ku=True,
          not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=6)) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(serial).not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ku:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True)
    algo = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(issuer_key, algo)


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert(root_key, root_key, subject="root", issuer="root", ca=True, serial=1,
                 not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=300))
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = _cert(issuing_key, root_key, subject="issuing", issuer="root", ca=True, serial=2,
                    not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=300))
    return {"root": root, "root_key": root_key, "issuing": issuing, "issuing_key": issuing_key}


# --- parse ------------------------------------------------------------------------------------------


def test_round_trip_is_byte_exact():
    raw = rfc8785.dumps(_doc())
    report = pure.parse_report(raw)
    assert report.raw == raw
    assert report.issued_at == NOW
    assert [c.name for c in report.components] == ["engine", "dataset/clinic-a"]  # load order kept
    rebuilt = pure.build_report(order_id="order-1", loader_certificate_serial=0x1A2B, issued_at=NOW,
                                components=report.components, arguments_digest=ARGS)
    assert rebuilt.raw == raw and rebuilt.sha256 == report.sha256
    assert report.components_sha256 == __import__("hashlib").sha256(
        rfc8785.dumps(_doc()["components"])).hexdigest()


@pytest.mark.parametrize("raw", [
    json.dumps(_doc()).encode(),  # spaces
    json.dumps(_doc(), sort_keys=True, indent=1).encode(),
    rfc8785.dumps(_doc()) + b"\n",
    rfc8785.dumps(_doc())[:-1] + b',"v":1}',  # duplicate key, which json.loads would collapse
    rfc8785.dumps(_doc()).replace(b'"v":1', b'"v":1.0'),
    rfc8785.dumps(_doc()).replace(b'"engine"', b'"\\u0065ngine"'),
], ids=["spaces", "indent", "trailing-newline", "duplicate-key", "float", "escaped"])
def test_not_canonical(raw):
    with pytest.raises(CAServiceError) as e:
        pure.parse_report(raw)
    assert _code(e) == "integrity.not_canonical"


@pytest.mark.parametrize("doc", [
    _doc(extra=1),
    _doc(v=2), _doc(v=True), _doc(v="1"),
    _doc(order_id=""), _doc(order_id="a b"), _doc(order_id="x" * 129),
    _doc(loader_certificate_serial="01a"), _doc(loader_certificate_serial="1A2B"),
    _doc(loader_certificate_serial="0x1a"), _doc(loader_certificate_serial="1" * 41),
    _doc(issued_at="2026-03-01T12:00:00+00:00"), _doc(issued_at="2026-02-30T12:00:00Z"),
    _doc(issued_at="2026-03-01T12:00:00.5Z"), _doc(issued_at="２026-03-01T12:00:00Z"),
    _doc(components=[]),
    _doc(components=[{"name": "e", "digest": ENGINE}] * 2),
    _doc(components=[{"name": "e", "digest": ENGINE, "size": 1}]),
    _doc(components=[{"name": "e"}]),
    _doc(components=[{"name": "e\n", "digest": ENGINE}]),
    _doc(components=[{"name": "e", "digest": "md5:" + "0" * 32}]),
    _doc(components=[{"name": "e", "digest": "sha256:" + "0" * 63}]),
    _doc(components=[{"name": "e", "digest": "sha384:" + "0" * 64}]),
    _doc(components=[{"name": f"c{i}", "digest": ENGINE} for i in range(pure.MAX_COMPONENTS + 1)]),
    _doc(arguments_digest="sha256:" + "E" * 64),
    {k: v for k, v in _doc().items() if k != "arguments_digest"},
    [1], "report", 1,
], ids=lambda d: json.dumps(d)[:40])
def test_schema_refusals(doc):
    with pytest.raises(CAServiceError) as e:
        pure.parse_report(rfc8785.dumps(doc))
    assert _code(e) == "integrity.malformed"


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"{", b"x" * (pure.MAX_REPORT_BYTES + 1)])
def test_not_json(raw):
    with pytest.raises(CAServiceError) as e:
        pure.parse_report(raw)
    assert _code(e) == "integrity.malformed"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse_never_raises_anything_else(data):
    try:
        pure.parse_report(data)
    except CAServiceError as exc:
        assert exc.code in {"integrity.malformed", "integrity.not_canonical"}


def test_schema_doc_matches_the_model():
    """docs/integrity-report.schema.json is generated from the model: regenerate with
    python -c 'import json; from ca_service.ca.integrity import report_json_schema as s;
    print(json.dumps(s(), indent=2))' > docs/integrity-report.schema.json"""
    assert json.loads((DOCS / "integrity-report.schema.json").read_text()) == pure.report_json_schema()


def test_schema_doc_agrees_with_the_parser():
    import jsonschema

    schema = pure.report_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    assert v.is_valid(_doc())
    for bad in (_doc(extra=1), _doc(v=True), _doc(components=[{"name": "e", "digest": ENGINE, "x": 1}])):
        assert not v.is_valid(bad)


# --- signatures -------------------------------------------------------------------------------------


KEYS = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()), "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_sign_and_verify(kind):
    key = KEYS[kind]()
    report = pure.parse_report(rfc8785.dumps(_doc()))
    sig, alg = pure.sign_report(key, report)
    assert alg == {"p256": "ecdsa-p256-sha256", "p384": "ecdsa-p384-sha384", "ed25519": "ed25519"}[kind]
    pure.verify_report_signature(report, sig, alg, key.public_key())
    # a signature over the bare report (no domain separation) is refused
    if kind == "ed25519":
        bare = key.sign(report.raw)
    else:
        bare = key.sign(report.raw, ec.ECDSA(hashes.SHA256() if kind == "p256" else hashes.SHA384()))
    with pytest.raises(CAServiceError) as e:
        pure.verify_report_signature(report, bare, alg, key.public_key())
    assert _code(e) == "integrity.signature_invalid"
    for other in sorted(set(pure.ALGS) - {alg}) + ["ES256", ""]:
        with pytest.raises(CAServiceError) as e:
            pure.verify_report_signature(report, sig, other, key.public_key())
        assert _code(e) == "integrity.alg_mismatch"


def test_every_signature_byte_matters():
    key = ec.generate_private_key(ec.SECP256R1())
    report = pure.parse_report(rfc8785.dumps(_doc()))
    sig, alg = pure.sign_report(key, report)
    for i in range(len(sig)):
        bad = bytearray(sig)
        bad[i] ^= 0x80
        with pytest.raises(CAServiceError) as e:
            pure.verify_report_signature(report, bytes(bad), alg, key.public_key())
        assert _code(e) == "integrity.signature_invalid", i
    for bad in (b"", b"\x00" * 300, sig + b"\x00"):  # empty, oversized, trailing garbage after the DER
        with pytest.raises(CAServiceError) as e:
            pure.verify_report_signature(report, bad, alg, key.public_key())
        assert _code(e) == "integrity.signature_invalid"


def test_unsupported_key_types():
    with pytest.raises(CAServiceError) as e:
        pure.alg_for_key(rsa.generate_private_key(65537, 3072).public_key())
    assert _code(e) == "integrity.alg_mismatch"
    with pytest.raises(CAServiceError) as e:
        pure.alg_for_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    assert _code(e) == "integrity.alg_mismatch"


def test_digest_of():
    assert pure.digest_of(b"", "sha256") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert pure.digest_of(b"x").startswith("sha384:")
    with pytest.raises(CAServiceError):
        pure.digest_of(b"x", "md5")


# --- the signing certificate and the offline check --------------------------------------------------


def test_check_signing_certificate(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(key, pki["issuing_key"])
    pure.check_signing_certificate(leaf, pki["issuing"], times=(NOW,))
    cases = {
        "integrity.certificate_untrusted": [
            (leaf, pki["root"]),  # not this issuer's signature
            (_cert(key, key, issuer="issuing"), pki["issuing"]),  # self-signed, issuer name spoofed
            (_cert(key, pki["issuing_key"], ca=True), pki["issuing"]),
            (_cert(key, pki["issuing_key"], ku=False), pki["issuing"]),
        ],
        "integrity.certificate_expired": [
            (_cert(key, pki["issuing_key"], not_after=NOW - timedelta(seconds=1)), pki["issuing"]),
            (_cert(key, pki["issuing_key"], not_before=NOW + timedelta(seconds=1)), pki["issuing"]),
        ],
    }
    for code, pairs in cases.items():
        for cert, issuer in pairs:
            with pytest.raises(CAServiceError) as e:
                pure.check_signing_certificate(cert, issuer, times=(NOW,))
            assert _code(e) == code


def _signed(pki, key=None, **doc_over):
    key = key or ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(key, pki["issuing_key"])
    report = pure.parse_report(rfc8785.dumps(_doc(**doc_over)))
    sig, alg = pure.sign_report(key, report)
    return pure.SignedReport(report=report, signature=sig, alg=alg, chain=(leaf, pki["issuing"])), key


def test_offline_verify(pki):
    signed, _ = _signed(pki)
    pure.verify_signed_report(signed, pki["root"], NOW)
    again = pure.load_signed_report(json.dumps(signed.to_file_json()).encode())
    assert again == signed
    pure.verify_signed_report(again, pki["root"], NOW)


def test_offline_refusals(pki):
    signed, key = _signed(pki)
    other_root_key = ec.generate_private_key(ec.SECP384R1())
    other_root = _cert(other_root_key, other_root_key, subject="root", issuer="root", ca=True, serial=1,
                       not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1))
    other_serial, _ = _signed(pki, loader_certificate_serial="ff")
    cases = [
        (signed, other_root, NOW, "integrity.certificate_untrusted"),
        (pure.SignedReport(signed.report, signed.signature, signed.alg, chain=(signed.chain[0],)), pki["root"], NOW,
         "integrity.certificate_untrusted"),  # the issuing certificate is missing
        (signed, pki["root"], NOW + timedelta(days=1), "integrity.certificate_expired"),
        (other_serial, pki["root"], NOW, "integrity.certificate_unknown"),
        (pure.SignedReport(signed.report, signed.signature[:-1] + bytes([signed.signature[-1] ^ 1]), signed.alg,
                           signed.chain), pki["root"], NOW, "integrity.signature_invalid"),
    ]
    for s, root, at, code in cases:
        with pytest.raises(CAServiceError) as e:
            pure.verify_signed_report(s, root, at)
        assert _code(e) == code


@pytest.mark.parametrize("text", [b"{}", b"[]", b"not json",
                                  json.dumps({"report": "@@", "signature": "AA==", "alg": "ed25519",
                                              "certificate_chain": "x"}).encode()])
def test_load_signed_report_refusals(text):
    with pytest.raises(CAServiceError) as e:
        pure.load_signed_report(text)
    assert _code(e) == "integrity.malformed"


def test_check_report_proof():
    """A one-leaf log: the leaf is the report's, the proof verifies; another report's is refused."""
    from ca_service.tlog import merkle
    from ca_service.tlog.bundle import ProofBundle
    from ca_service.tlog.checkpoint import Checkpoint, NoteSigner
    from ca_service.tlog.leaves import integrity_report_leaf

    report = pure.parse_report(rfc8785.dumps(_doc()))
    leaf = integrity_report_leaf(at=NOW, report_sha256=report.sha256, loader_serial="1a2b", order_id="order-1",
                                 components_sha256=report.components_sha256)
    signer = NoteSigner("example.test/log", ed25519.Ed25519PrivateKey.generate())
    note = signer.sign(Checkpoint("example.test/log", 1, merkle.leaf_hash(leaf)).body())
    bundle = ProofBundle(index=0, hashes=(), checkpoint_note=note, extra=leaf).text()
    cp = pure.check_report_proof(report, bundle, signer.verifier.vkey)
    assert cp.size == 1
    other = pure.parse_report(rfc8785.dumps(_doc(order_id="order-2")))
    with pytest.raises(CAServiceError) as e:
        pure.check_report_proof(other, bundle, signer.verifier.vkey)
    assert _code(e) == "log.inclusion_proof_invalid"
