"""NVIDIA OCSP answers as a cached collateral kind: the endpoint (an RFC 6960 request, POSTed, recorded
by its GET form), the family's needs (one per device certificate but root and leaf, read from the
real chains too), and the check before an answer is cached, each refusal with its code."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import Kind, endpoint_for, parse_url
from ca_service.collateral.errors import HostNotAllowed, UrlNotAllowed
from ca_service.collateral.fetchers import RequestsFetcher, Response
from ca_service.collateral.verify import NVIDIA_ISSUER_CHAIN_HEADER, verify_response
from ca_service.errors import CollateralInvalid, CollateralMismatch, EvidenceError, RootUntrusted
from ca_service.evidence.needs import NvidiaOcsp, NvidiaRim, needs_for
from tests.unit.evidence.nvidia.fakenvidia import AT, FakeNvidia
from tests.vectors.manifest import vectors_for

FAKE = FakeNvidia()
NEEDS = tuple(n for n in needs_for("nvidia-gpu", FAKE.report(), [FAKE.chain_pem()], FAKE.roots)[0]
              if isinstance(n, NvidiaOcsp))


def test_needs_name_every_certificate_but_root_and_leaf():
    assert [n.serial for n in NEEDS if isinstance(n, NvidiaOcsp)] == [c.serial_number for c in FAKE.certs[1:-1]]
    for i, need in enumerate(NEEDS, start=1):
        assert isinstance(need, NvidiaOcsp)
        assert need.issuer_chain == tuple(c.public_bytes(Encoding.DER) for c in FAKE.certs[:i])


@pytest.mark.parametrize("vector", vectors_for("nvidia"), ids=lambda v: v.id)
def test_needs_of_the_real_chains(vector):
    """The real H100 chains build to the pinned NVIDIA root: three answers each, as NVIDIA's verifiers ask."""
    (alternative,) = needs_for("nvidia-gpu", vector.read("report"), [vector.read("cert_chain")])
    eps = [endpoint_for(n) for n in alternative if isinstance(n, NvidiaOcsp)]
    assert len(eps) == 3 and {ep.host for ep in eps} == {"ocsp.ndis.nvidia.com"}
    assert all(parse_url(ep.url) == ep and ep.kind is Kind.NVIDIA_OCSP for ep in eps)


def test_needs_name_the_rims_by_their_rim_service_ids():
    """The 2023 vector's RIMs are the files nvtrust names 1010_0200_882_96005E0001 (VBIOS) and the
    545.00 driver's; the CA does not fetch them (no endpoint)."""
    vector = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
    (alternative,) = needs_for("nvidia-gpu", vector.read("report"), [vector.read("cert_chain")])
    rims = [n for n in alternative if isinstance(n, NvidiaRim)]
    assert rims == [NvidiaRim("NV_GPU_DRIVER_GH100_545.00", "driver"),
                    NvidiaRim("NV_GPU_VBIOS_1010_0200_882_96005E0001", "vbios")]
    with pytest.raises(UrlNotAllowed):
        endpoint_for(rims[0])


def test_needs_without_a_chain_are_refused():
    with pytest.raises(EvidenceError) as exc:
        needs_for("nvidia-gpu", FAKE.report(), [])
    assert exc.value.code == "evidence.collateral_missing"
    with pytest.raises(RootUntrusted):  # the test root is not one of the vendor pins
        needs_for("nvidia-gpu", FAKE.report(), [FAKE.chain_pem()])


def test_the_endpoint_is_a_sha384_request_in_its_get_form():
    ep = endpoint_for(NEEDS[0])
    req = ocsp.load_der_ocsp_request(ep.post_body or b"")
    assert isinstance(req.hash_algorithm, hashes.SHA384) and req.serial_number == FAKE.certs[1].serial_number
    assert ep.url == "https://ocsp.ndis.nvidia.com/" + quote(base64.b64encode(ep.post_body or b"").decode(), safe="")
    assert parse_url(ep.url) == ep and parse_url(ep.url).issuer_chain == ()  # the chain is not in the URL


def _request_url(alg: hashes.HashAlgorithm, *, nonce: bool = False) -> str:
    b = ocsp.OCSPRequestBuilder().add_certificate(FAKE.certs[2], FAKE.certs[1], alg)
    if nonce:
        from cryptography import x509
        b = b.add_extension(x509.OCSPNonce(b"0" * 16), critical=False)
    der = b.build().public_bytes(Encoding.DER)
    return "https://ocsp.ndis.nvidia.com/" + quote(base64.b64encode(der).decode(), safe="")


@pytest.mark.parametrize("url", [
    _request_url(hashes.SHA1()), _request_url(hashes.SHA384(), nonce=True),
    "https://ocsp.ndis.nvidia.com/bm90IGEgcmVxdWVzdA%3D%3D", "https://ocsp.ndis.nvidia.com/%%%",
    # the same request, not in its canonical encoding: a DER SEQUENCE's base64 begins with "M", here
    # percent-encoded (a "+" left unencoded would do too, but a random test key's request may hold none)
    endpoint_for(NEEDS[0]).url.replace("nvidia.com/M", "nvidia.com/%4D", 1),
    endpoint_for(NEEDS[0]).url + "?x=1",
])
def test_other_requests_are_refused(url):
    assert url != endpoint_for(NEEDS[0]).url
    with pytest.raises(UrlNotAllowed):
        parse_url(url)


def test_only_the_allowlisted_responder():
    with pytest.raises(HostNotAllowed):
        parse_url(endpoint_for(NEEDS[0]).url.replace("ocsp.ndis.nvidia.com", "ocsp.example.com"))
    with pytest.raises(UrlNotAllowed):
        endpoints.nvidia_ocsp(b"\0" * 20, b"\0" * 20, 1)  # SHA-1 sized hashes


def _resp(ep: endpoints.Endpoint, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(ep.url, 200, headers or {}, body, AT)


def test_an_answer_is_verified_and_kept_with_its_issuer_chain():
    ep = endpoint_for(NEEDS[2])
    item = verify_response(ep, _resp(ep, FAKE.ocsp(3)), FAKE.roots)
    assert item.kind is Kind.NVIDIA_OCSP and item.key == ep.key
    assert item.issue_date == AT - timedelta(days=1) and item.next_update == AT + timedelta(days=6)
    # rebuilt from its URL (a refresh, an import), it is verified with the chain kept beside it
    again = verify_response(parse_url(ep.url), _resp(ep, FAKE.ocsp(3, signer="delegate"), item.headers), FAKE.roots)
    assert again.headers == item.headers
    sha1 = verify_response(ep, _resp(ep, FAKE.ocsp(3, certid_hash=hashes.SHA1())), FAKE.roots)
    assert sha1.key == ep.key  # answered under another CertID hash: the same certificate
    revoked = verify_response(ep, _resp(ep, FAKE.ocsp(3, status=ocsp.OCSPCertStatus.REVOKED)), FAKE.roots)
    assert revoked.sha256 != item.sha256  # a revocation is kept too: the verifier refuses by it


@pytest.mark.parametrize(("body", "error"), [
    (lambda: FAKE.ocsp(3, signer="stranger"), CollateralInvalid),
    (lambda: FAKE.ocsp(3, signer="sibling"), CollateralInvalid),
    (lambda: FAKE.ocsp(3, signer="delegate-no-eku"), CollateralInvalid),
    (lambda: FAKE.ocsp(3, next_update=None), CollateralInvalid),
    (lambda: FAKE.ocsp(3, status=ocsp.OCSPCertStatus.UNKNOWN), CollateralInvalid),
    (lambda: FAKE.ocsp(2), CollateralMismatch),  # another certificate's answer
    (lambda: ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(Encoding.DER),
     CollateralInvalid),
    (lambda: b"\x30\x03\x0a\x01\x00", CollateralInvalid),
], ids=["stranger", "sibling", "delegate-no-eku", "no-next-update", "unknown", "other-cert", "unsuccessful", "junk"])
def test_answers_that_are_not_kept(body, error):
    ep = endpoint_for(NEEDS[2])
    with pytest.raises(error):
        verify_response(ep, _resp(ep, body()), FAKE.roots)


def test_an_answer_without_a_pinned_issuer_chain_is_not_kept():
    ep = parse_url(endpoint_for(NEEDS[2]).url)
    with pytest.raises(CollateralInvalid):  # nothing to check it with
        verify_response(ep, _resp(ep, FAKE.ocsp(3)), FAKE.roots)
    other = FakeNvidia()
    forged = {NVIDIA_ISSUER_CHAIN_HEADER: quote(b"".join(c.public_bytes(Encoding.PEM) for c in other.certs[:3]).decode(),
                                                safe="")}
    with pytest.raises(RootUntrusted):  # a chain to a root nobody pinned
        verify_response(ep, _resp(ep, FAKE.ocsp(3), forged), FAKE.roots)
    with pytest.raises((RootUntrusted, CollateralMismatch)):  # pinned, but another issuer than the CertID's
        verify_response(ep, _resp(ep, other.ocsp(3), forged), other.roots)


def test_the_fetcher_posts_the_request():
    ep = endpoint_for(NEEDS[0])
    sent: dict[str, object] = {}

    class Raw:
        def read(self, n: int, decode_content: bool) -> bytes:
            return b"answer"

    class Resp:
        status_code, headers, raw = 200, {"Content-Type": "application/ocsp-response"}, Raw()

        def __enter__(self) -> Resp:
            return self

        def __exit__(self, *a: object) -> None:
            return None

    class Session:
        def post(self, url: str, **kw: object) -> Resp:
            sent.update(url=url, **kw)
            return Resp()

        def get(self, url: str, **kw: object) -> Resp:
            raise AssertionError("an OCSP request is POSTed")

    got = RequestsFetcher(session=Session(), mirrors={"ocsp.ndis.nvidia.com": "http://127.0.0.1:1"}).fetch(ep)  # type: ignore[arg-type]
    assert sent["url"] == "http://127.0.0.1:1/" and sent["data"] == ep.post_body
    assert sent["headers"] == {"Content-Type": "application/ocsp-request"}
    assert got.url == ep.url and got.body == b"answer"
