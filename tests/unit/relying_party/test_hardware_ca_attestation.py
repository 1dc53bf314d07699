"""The relying party's checks on hardware-shaped evidence, not only the sim: the CA's own attestation
as a TDX CA answers it (a TDX v4 quote re-signed under the test Intel root of
tests/collateral/testroot.py, with its collateral) and as an SEV-SNP CA does (a report under the fake
AMD hierarchy of tests/unit/evidence/snp/fakeamd.py, with VCEK, chain and CRL), judged by the
production verifiers: chain, evidence, binding and ``--expect tee=tdx`` / ``mrtd=`` / ``tee=snp`` pass;
replayed to another nonce, bound to another key, a flipped byte or an unpinned root fail.
``tee=NAME`` names the TEE type for every evidence kind the registry verifies (the EAR records the
kind, ``tdx-quote``)."""

from __future__ import annotations

import os
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca_service.evidence import verify
from ca_service.evidence.binding import binding_value
from ca_service.evidence.registry import known_kinds
from ca_service.relying_party.ca_attestation import CaAttestation, fresh_nonce, verify_ca_attestation
from ca_service.relying_party.expect import TEE_OF_KIND, Expectation
from tests.collateral.testroot import TestIntel
from tests.unit.evidence.snp.fakeamd import AT as SNP_AT
from tests.unit.evidence.snp.fakeamd import FakeAmd, make_report

TI = TestIntel()
HOST = TI.platform("ca-host")
COLLATERAL = TI.collateral(HOST.fmspc, evaluation=20)


def _ca(cn: str, key, issuer=None, *, ca_path: int):
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(SNP_AT - timedelta(days=1))
            .not_valid_after(TI.now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=ca_path), critical=True)
            .sign(issuer_key, hashes.SHA384()))


ROOT_KEY, ISSUING_KEY = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
ROOT = _ca("test root", ROOT_KEY, ca_path=1)
ISSUING = _ca("test issuing", ISSUING_KEY, (ROOT, ROOT_KEY), ca_path=0)


def _attestation(nonce: bytes, issuing: x509.Certificate = ISSUING) -> CaAttestation:
    """What GET /v1/ca/attestation answers from a TDX CA: the quote bound to nonce and the issuing key."""
    spki = issuing.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    quote = TI.quote(HOST, binding_value(nonce, spki))
    return CaAttestation("tdx-quote", quote, nonce, issuing, "production", (COLLATERAL,))


def test_a_tdx_ca_attestation_passes_with_tee_and_mrtd_expectations():
    nonce = fresh_nonce()
    att = _attestation(nonce)
    mrtd = verify("tdx-quote", att.evidence, collateral=[COLLATERAL], at=TI.now, roots=TI.roots).claims["mrtd"]
    v = verify_ca_attestation(att, ROOT, nonce=nonce, at=TI.now, roots=TI.roots,
                              expectations=[Expectation.parse("tee=tdx"), Expectation.parse(f"mrtd={mrtd.upper()}")])
    steps = {s.name: (s.state, s.detail) for s in v.steps}
    assert v.ok, steps
    assert steps["evidence"] == ("pass", f"tdx-quote evidence genuine at {TI.now.isoformat()}, TCB UpToDate")
    assert steps["profile"][0] == "pass" and steps["binding"][0] == "pass"
    assert steps["expect tee"][0] == "pass" and steps["expect mrtd"][0] == "pass"
    wrong = verify_ca_attestation(att, ROOT, nonce=nonce, at=TI.now, roots=TI.roots,
                                  expectations=[Expectation.parse("tee=snp"), Expectation.parse("mrtd=" + "00" * 48)])
    assert {s.name: s.state for s in wrong.steps}["expect tee"] == "fail" and not wrong.ok
    assert "tee is tdx, tdx-quote, expected snp" in {s.name: s.detail for s in wrong.steps}["expect tee"]


def test_a_tdx_ca_attestation_is_refused_when_replayed_rebound_or_unpinned():
    nonce = fresh_nonce()
    att = _attestation(nonce)
    replayed = verify_ca_attestation(att, ROOT, nonce=fresh_nonce(), at=TI.now, roots=TI.roots)
    assert {s.name: s.state for s in replayed.steps}["binding"] == "fail"
    # the quote binds another key than the issuing CA certificate the answer carries
    other = _ca("test issuing", ec.generate_private_key(ec.SECP384R1()), (ROOT, ROOT_KEY), ca_path=0)
    swapped = CaAttestation(att.kind, _attestation(nonce, other).evidence, nonce, ISSUING, att.profile,
                            att.collateral)
    assert {s.name: s.state for s in verify_ca_attestation(swapped, ROOT, nonce=nonce, at=TI.now,
                                                           roots=TI.roots).steps}["binding"] == "fail"
    # the test Intel root is not a vendor pin: by default the evidence does not verify
    unpinned = verify_ca_attestation(att, ROOT, nonce=nonce, at=TI.now)
    ev_step = next(s for s in unpinned.steps if s.name == "evidence")
    assert ev_step.state == "fail" and ev_step.detail.startswith("tdx-quote: [evidence.")
    # a flipped byte of the signed quote
    bad = bytearray(att.evidence)
    bad[600] ^= 1
    flipped = CaAttestation(att.kind, bytes(bad), nonce, ISSUING, att.profile, att.collateral)
    assert {s.name: s.state for s in verify_ca_attestation(flipped, ROOT, nonce=nonce, at=TI.now,
                                                           roots=TI.roots).steps}["evidence"] == "fail"


def test_tee_names_every_evidence_kind_as_a_relying_party_writes_it():
    assert set(TEE_OF_KIND) == set(known_kinds()), "a new evidence kind: give it its TEE name"
    for kind, tee in TEE_OF_KIND.items():
        ear = {"submods": {kind: {"ca-service.tee": kind}}}  # what ca/ear.py's submod records
        assert Expectation.parse(f"tee={tee}").check(ear)[0], kind
        assert Expectation.parse(f"tee={kind}").check(ear)[0], kind
        assert not Expectation.parse("tee=other").check(ear)[0]
    # a real TDX verification's kind, as the EAR of a TDX certificate carries it
    ve = verify("tdx-quote", TI.quote(HOST, os.urandom(64)), collateral=[COLLATERAL], at=TI.now, roots=TI.roots)
    assert Expectation.parse("tee=tdx").check({"submods": {ve.kind: {"ca-service.tee": ve.kind}}}) == (True, "tee = tdx")


def test_an_snp_ca_attestation_passes_and_a_replay_does_not():
    amd = FakeAmd("Milan")
    key, vcek = amd.vek(chip_id=bytes(range(64)), tcb={"bl": 3, "tee": 0, "snp": 8, "ucode": 115})
    nonce = fresh_nonce()
    spki = ISSUING.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    att = CaAttestation("snp-report", make_report(key, report_data=binding_value(nonce, spki)), nonce, ISSUING,
                        "production", (vcek, amd.chain_pem(), amd.crl()))
    v = verify_ca_attestation(att, ROOT, nonce=nonce, at=SNP_AT, roots=amd.roots,
                              expectations=[Expectation.parse("tee=snp"), Expectation.parse("measurement=" + "22" * 48)])
    steps = {s.name: (s.state, s.detail) for s in v.steps}
    assert v.ok, steps
    assert steps["evidence"][0] == "pass" and steps["evidence"][1].startswith("snp-report evidence genuine")
    assert steps["binding"][0] == "pass" and steps["expect tee"][0] == "pass" and steps["expect measurement"][0] == "pass"
    replayed = verify_ca_attestation(att, ROOT, nonce=fresh_nonce(), at=SNP_AT, roots=amd.roots)
    assert {s.name: s.state for s in replayed.steps}["binding"] == "fail" and not replayed.ok
    unpinned = verify_ca_attestation(att, ROOT, nonce=nonce, at=SNP_AT)
    assert "evidence.root_untrusted" in next(s.detail for s in unpinned.steps if s.name == "evidence")
