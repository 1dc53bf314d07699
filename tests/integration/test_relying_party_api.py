"""The relying party's Python API as an application calls it: ``seal(...)`` verifies the recipient
(chain, revocation through an injected fetcher, profile, status, expectations, and with a
``LogTrust`` its log inclusion) and writes nothing unless every step passed; ``unseal(...)`` opens
the container with the recipient's key. The CA is the in-process one; the fetcher routes the
certificate's own AIA/CDP URLs to it."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ca_service.errors import SealRefused, UnsealFailed
from ca_service.relying_party import Expectation, RecipientRefused, seal, unseal
from ca_service.relying_party.transparency import LogTrust
from ca_service.services import log as log_service
from ca_service.services import tokens

DATA = bytes(range(256)) * 600 + b"end"  # 153,603 bytes: three chunks


@pytest.fixture
def fetch(client):
    """A ``Fetcher`` over the in-process app: the URL's path and query, as the network would carry them."""
    calls: list[str] = []

    def fetcher(url: str, body: bytes | None, content_type: str | None) -> bytes:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        calls.append(f"{'POST' if body is not None else 'GET'} {parts.path}")
        resp = (client.get(path) if body is None
                else client.post(path, data=body, content_type=content_type or "application/octet-stream"))
        if resp.status_code != 200:
            raise OSError(f"HTTP {resp.status_code} for {url}")
        return bytes(resp.data)

    fetcher.calls = calls  # type: ignore[attr-defined]
    return fetcher


def _issue(issuer, key):
    body, _ = issuer.body(key=key)
    resp = issuer.client.post("/v1/certificates", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["serial"], x509.load_pem_x509_certificates(resp.get_json()["certificate_chain"].encode())


def _pem(key) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def test_seal_verifies_then_encrypts_and_unseal_opens(issuer, services, client, fetch):
    root = services.keys.certificate("root")
    key = ec.generate_private_key(ec.SECP256R1())
    serial, chain = _issue(issuer, key)
    log_service.publish_checkpoint(services)
    vkey = client.get("/v1/log/vkey").get_data(as_text=True).strip()
    dst = io.BytesIO()
    verdict = seal(chain, root, io.BytesIO(DATA), dst, at=datetime.now(UTC), fetch=fetch, accept_insecure=True,
                   expectations=[Expectation.parse("tee=sim"), Expectation.parse("policy=sim")], log=LogTrust(vkey))
    steps = {s.name: s for s in verdict.steps}
    assert verdict.ok, [(s.name, s.state, s.detail) for s in verdict.steps]
    assert steps["revocation"].state == "pass" and steps["revocation"].detail.startswith("OCSP http")
    assert steps["log_inclusion"].state == "pass" and steps["expect tee"].state == "pass"
    assert "POST /v1/ocsp" in fetch.calls and f"GET /v1/certificates/{serial}/proof" in fetch.calls
    sealed = dst.getvalue()
    assert sealed.startswith(b"CASEAL\x00\x01") and DATA[:4096] not in sealed
    out = io.BytesIO()
    assert unseal(_pem(key), io.BytesIO(sealed), out) == serial  # PEM bytes, as read from key.pem
    assert out.getvalue() == DATA
    again = io.BytesIO()
    assert unseal(key, io.BytesIO(sealed), again) == serial and again.getvalue() == DATA  # a key object too

    with pytest.raises(UnsealFailed, match="wrong key"):
        unseal(ec.generate_private_key(ec.SECP256R1()), io.BytesIO(sealed), io.BytesIO())
    with pytest.raises(UnsealFailed, match="not an unencrypted PEM private key"):
        unseal(b"not a key", io.BytesIO(sealed), io.BytesIO())
    tampered = bytearray(sealed)
    tampered[len(sealed) // 2] ^= 1
    with pytest.raises(UnsealFailed) as bad:
        unseal(key, io.BytesIO(bytes(tampered)), io.BytesIO())
    assert bad.value.code == "seal.open_failed"


def test_seal_refuses_and_writes_nothing_unless_every_step_passed(issuer, services, client, fetch):
    root = services.keys.certificate("root")
    now = datetime.now(UTC)
    serial, chain = _issue(issuer, ec.generate_private_key(ec.SECP256R1()))

    def refused(**kw) -> dict[str, str]:
        dst = io.BytesIO()
        with pytest.raises(RecipientRefused) as exc:
            seal(chain, root, io.BytesIO(DATA), dst, at=kw.pop("at", now), fetch=fetch, **kw)
        assert exc.value.code == "seal.refused" and dst.getvalue() == b""
        return {s.name: s.state for s in exc.value.verdict.steps}

    assert refused()["profile"] == "fail"  # an insecure-dev certificate without the opt-in
    assert refused(accept_insecure=True, expectations=[Expectation.parse("tee=tdx")])["expect tee"] == "fail"
    assert refused(accept_insecure=True, expectations=[Expectation.parse("engine=sha256:" + "00" * 32)]
                   )["expect engine"] == "fail"  # the EAR has no such claim: never a silent pass
    assert refused(accept_insecure=True, at=chain[0].not_valid_after_utc + timedelta(days=1))["validity"] == "fail"
    other = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not the pinned root")])
    foreign_root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(other.public_key())
                    .serial_number(1).not_valid_before(root.not_valid_before_utc)
                    .not_valid_after(root.not_valid_after_utc).sign(other, root.signature_hash_algorithm))
    dst = io.BytesIO()
    with pytest.raises(RecipientRefused):
        seal(chain, foreign_root, io.BytesIO(DATA), dst, at=now, fetch=fetch, accept_insecure=True)
    assert dst.getvalue() == b""

    # revoked: refused online (OCSP through the fetcher) and offline (the CRL as a file's bytes)
    t = tokens.create_token(services, role="admin", name=f"api-{uuid.uuid4().hex[:6]}", expires_in=None, actor="test")
    r = client.post(f"/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"},
                    headers={"Authorization": f"Bearer {t.secret}"})
    assert r.status_code == 200, r.get_json()
    dst = io.BytesIO()
    with pytest.raises(RecipientRefused) as exc:
        seal(chain, root, io.BytesIO(DATA), dst, at=datetime.now(UTC), fetch=fetch, accept_insecure=True)
    rev = next(s for s in exc.value.verdict.steps if s.name == "revocation")
    assert rev.state == "fail" and "REVOKED" in rev.detail and "keyCompromise" in rev.detail
    assert "REVOKED" in exc.value.detail and dst.getvalue() == b""
    with pytest.raises(RecipientRefused) as exc:
        seal(chain, root, io.BytesIO(DATA), io.BytesIO(), at=datetime.now(UTC), revocation="offline",
             crl=client.get("/v1/ca/crl").data, accept_insecure=True)
    assert "REVOKED (CRL file)" in next(s.detail for s in exc.value.verdict.steps if s.name == "revocation")


def test_a_key_not_meant_for_key_agreement_is_not_sealed_to(issuer, services, fetch):
    """An Ed25519 leaf verifies, but its key usage has no keyAgreement: refused, nothing written."""
    _, chain = _issue(issuer, ed25519.Ed25519PrivateKey.generate())
    dst = io.BytesIO()
    with pytest.raises(SealRefused, match="keyAgreement") as exc:
        seal(chain, services.keys.certificate("root"), io.BytesIO(DATA), dst, at=datetime.now(UTC), fetch=fetch,
             accept_insecure=True)
    assert not isinstance(exc.value, RecipientRefused) and dst.getvalue() == b""


def test_online_revocation_falls_back_to_the_crl_at_the_cdp(issuer, services, client, fetch):
    """OCSP at the AIA URL unreachable: the CRL at the certificate's CDP decides, good then revoked;
    neither reachable: 'could not be checked', a failure, never a pass."""
    from ca_service.relying_party import verify_certificate

    root = services.keys.certificate("root")
    serial, chain = _issue(issuer, ec.generate_private_key(ec.SECP256R1()))
    cdp = chain[0].extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = str(cdp[0].full_name[0].value)
    assert crl_url.endswith("/v1/ca/crl")

    def no_ocsp(url: str, body: bytes | None, content_type: str | None) -> bytes:
        if body is not None:
            raise ConnectionRefusedError(url)  # the responder is down
        return fetch(url, body, content_type)

    def rev(fetcher) -> tuple[str, str]:
        v = verify_certificate(chain, root, at=datetime.now(UTC), fetch=fetcher, accept_insecure=True)
        step = next(s for s in v.steps if s.name == "revocation")
        return step.state, step.detail

    state, detail = rev(no_ocsp)
    assert state == "pass" and detail.startswith(f"CRL {crl_url}: not on the CRL"), detail
    t = tokens.create_token(services, role="admin", name=f"api-{uuid.uuid4().hex[:6]}", expires_in=None, actor="test")
    assert client.post(f"/v1/certificates/{serial}/revoke", json={"reason": "cessationOfOperation"},
                       headers={"Authorization": f"Bearer {t.secret}"}).status_code == 200
    state, detail = rev(no_ocsp)
    assert state == "fail" and detail.startswith(f"REVOKED (CRL {crl_url}): revoked at ")
    assert "cessationOfOperation" in detail

    def nothing(url: str, body: bytes | None, content_type: str | None) -> bytes:
        raise ConnectionRefusedError(url)

    state, detail = rev(nothing)
    assert state == "fail" and detail.startswith("could not be checked (online)")
    assert "ConnectionRefusedError" in detail
