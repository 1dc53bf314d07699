"""`ca-service verify-ca`: a relying party checks the CA's own attestation over real HTTP against a
served insecure-dev CA (its sim TEE root exported by init and at /v1/ca/sim-root.pem): the issuing
CA chains to the pinned root, the evidence is genuine, bound to a fresh nonce and to the issuing
CA's key, and every expectation holds; each refusal names its step."""

from __future__ import annotations

import json
import subprocess

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.test_http_cli import CLI, server  # noqa: F401  (the served CA fixture)
from tests.integration.test_relying_party_cli import MRTD


def _run(server, *args, check=None):  # noqa: F811
    p = subprocess.run([*CLI, *map(str, args)], env=server["env"], capture_output=True, text=True, timeout=120)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    return p


def _steps(p) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(p.stdout)["steps"]}


def test_verify_ca_passes_with_the_pinned_roots_and_expectations(server):  # noqa: F811
    home, url = server["home"], server["url"]
    served = requests.get(f"{url}/v1/ca/sim-root.pem", timeout=10)
    assert served.status_code == 200
    assert served.content == (home / "sim-root.pem").read_bytes()
    p = _run(server, "verify-ca", "--server", url, "--root", home / "root.pem", "--sim-root", home / "sim-root.pem",
             "--accept-insecure", "--expect", "tee=sim", "--expect", f"mrtd={MRTD}", "--json", check=0)
    steps = _steps(p)
    assert {k: v["result"] for k, v in steps.items()} == {
        "ca_chain": "pass", "ca_validity": "pass", "ca_certificate": "pass", "profile": "warn", "evidence": "pass",
        "binding": "pass", "expect tee": "pass", "expect mrtd": "pass"}, steps
    text = _run(server, "verify-ca", "--server", url, "--root", home / "root.pem", "--sim-root",
                home / "sim-root.pem", "--accept-insecure", check=0)
    assert "[ok] binding: report data = SHA-512(binding || our nonce" in text.stdout
    assert text.stdout.strip().endswith("PASS")


def test_verify_ca_refusals_name_their_step(server, tmp_path):  # noqa: F811
    home, url = server["home"], server["url"]
    base = ["verify-ca", "--server", url, "--root", home / "root.pem", "--json"]
    no_optin = _steps(_run(server, *base, "--sim-root", home / "sim-root.pem", check=1))
    assert no_optin["profile"]["result"] == "fail" and "--accept-insecure" in no_optin["profile"]["detail"]
    no_sim_root = _steps(_run(server, *base, "--accept-insecure", check=1))
    assert no_sim_root["evidence"]["result"] == "fail" and "--sim-root" in no_sim_root["evidence"]["detail"]
    wrong_tee = _steps(_run(server, *base, "--sim-root", home / "sim-root.pem", "--accept-insecure",
                            "--expect", "tee=tdx", "--expect", "policy=sim", check=1))
    assert wrong_tee["expect tee"]["result"] == "fail" and "tee is sim, expected tdx" in wrong_tee["expect tee"]["detail"]
    assert wrong_tee["expect policy"]["result"] == "fail"  # no appraisal policy here: never a silent pass
    # a root we never pinned: the issuing CA does not chain to it
    key = ec.generate_private_key(ec.SECP384R1())
    root = x509.load_pem_x509_certificate((home / "root.pem").read_bytes())
    other = (x509.CertificateBuilder().subject_name(root.subject).issuer_name(root.subject)
             .public_key(key.public_key()).serial_number(1).not_valid_before(root.not_valid_before_utc)
             .not_valid_after(root.not_valid_after_utc)
             .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True).sign(key, hashes.SHA384()))
    (tmp_path / "other.pem").write_bytes(other.public_bytes(Encoding.PEM))
    foreign = _steps(_run(server, "verify-ca", "--server", url, "--root", tmp_path / "other.pem", "--sim-root",
                          home / "sim-root.pem", "--accept-insecure", "--json", check=1))
    assert foreign["ca_signature"]["result"] == "fail"
    # a sim root that is not this deployment's
    (tmp_path / "not-sim.pem").write_bytes(other.public_bytes(Encoding.PEM))
    bad_sim = _steps(_run(server, *base, "--sim-root", tmp_path / "not-sim.pem", "--accept-insecure", check=1))
    assert bad_sim["evidence"]["result"] == "fail" and "evidence.root_untrusted" in bad_sim["evidence"]["detail"]
    down = _run(server, "verify-ca", "--server", "http://127.0.0.1:9", "--root", home / "root.pem", check=1)
    assert "could not fetch http://127.0.0.1:9/v1/ca/attestation" in down.stderr


def test_a_replayed_answer_is_not_bound_to_a_fresh_nonce(server):  # noqa: F811
    """An attacker who replays the CA's answer to someone else's nonce fails the binding step."""
    from datetime import UTC, datetime

    from ca_service.relying_party.ca_attestation import CaAttestation, fresh_nonce, verify_ca_attestation

    home, url = server["home"], server["url"]
    theirs = fresh_nonce()
    doc = requests.get(f"{url}/v1/ca/attestation", params={"nonce": theirs.hex()}, timeout=10).json()
    att = CaAttestation.parse(doc)
    root = x509.load_pem_x509_certificate((home / "root.pem").read_bytes())
    sim_root = x509.load_pem_x509_certificate((home / "sim-root.pem").read_bytes())
    now = datetime.now(UTC)
    good = verify_ca_attestation(att, root, nonce=theirs, at=now, sim_root=sim_root, accept_insecure=True)
    assert good.ok, [(s.name, s.state, s.detail) for s in good.steps]
    mine = fresh_nonce()
    replayed = verify_ca_attestation(att, root, nonce=mine, at=now, sim_root=sim_root, accept_insecure=True)
    binding = next(s for s in replayed.steps if s.name == "binding")
    assert not replayed.ok and binding.state == "fail"
    # the answer names our nonce but carries evidence for another: still refused
    forged = CaAttestation(att.kind, att.evidence, mine, att.issuing, att.profile)
    assert not verify_ca_attestation(forged, root, nonce=mine, at=now, sim_root=sim_root, accept_insecure=True).ok
    # evidence bound to another key than the issuing CA's: refused
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    other_issuing = (x509.CertificateBuilder().subject_name(att.issuing.subject).issuer_name(att.issuing.issuer)
                     .public_key(leaf_key.public_key()).serial_number(2)
                     .not_valid_before(att.issuing.not_valid_before_utc).not_valid_after(att.issuing.not_valid_after_utc)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(leaf_key, hashes.SHA256()))
    swapped = CaAttestation(att.kind, att.evidence, theirs, other_issuing, att.profile)
    result = verify_ca_attestation(swapped, root, nonce=theirs, at=now, sim_root=sim_root, accept_insecure=True)
    names = {s.name: s.state for s in result.steps}
    assert names["binding"] == "fail" and names["ca_signature"] == "fail"
