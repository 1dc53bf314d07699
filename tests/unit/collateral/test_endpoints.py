"""Endpoints: URLs only from the allowlist and typed parameters; recorded URLs parse back or are refused."""

from __future__ import annotations

import pytest

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import AmdTcb, Kind, parse_url
from ca_service.collateral.errors import HostNotAllowed, UrlNotAllowed
from ca_service.collateral.verify import top_level_spans
from ca_service.errors import CollateralInvalid


def test_builders_make_the_vendor_urls():
    assert endpoints.tcb_info("tdx", bytes.fromhex("b0c06f000000")).url == \
        "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000"
    assert endpoints.qe_identity("sgx").url == "https://api.trustedservices.intel.com/sgx/certification/v4/qe/identity"
    assert endpoints.pck_crl("processor").url == \
        "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der"
    assert endpoints.root_ca_crl().url == "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    ep = endpoints.vcek("Milan", bytes(range(64)), AmdTcb(3, 0, 8, 115))
    assert ep.url == f"https://kdsintf.amd.com/vcek/v1/Milan/{bytes(range(64)).hex()}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    assert ep.key == f"Milan/{bytes(range(64)).hex()}/3.0.8.115"
    assert endpoints.amd_cert_chain("Genoa", "vlek").url == "https://kdsintf.amd.com/vlek/v1/Genoa/cert_chain"
    assert endpoints.amd_crl("Milan").url == "https://kdsintf.amd.com/vcek/v1/Milan/crl"
    turin = endpoints.vcek("Turin", bytes(8), AmdTcb(1, 2, 3, 4, fmc=5))
    assert turin.url.endswith("?blSPL=01&teeSPL=02&snpSPL=03&ucodeSPL=04&fmcSPL=05")


@pytest.mark.parametrize("ep", [
    endpoints.tcb_info("sgx", bytes.fromhex("00606a000000")), endpoints.qe_identity("tdx"),
    endpoints.pck_crl("platform"), endpoints.root_ca_crl(),
    endpoints.vcek("Genoa", bytes(64), AmdTcb(10, 0, 23, 84)), endpoints.vcek("Turin", bytes(8), AmdTcb(1, 2, 3, 4, 5)),
    endpoints.amd_cert_chain("Milan"), endpoints.amd_crl("Genoa", "vlek"),
])
def test_round_trip(ep):
    assert parse_url(ep.url) == ep


def test_lenient_only_where_the_vendor_is():
    # Intel accepts either FMSPC case and serves PEM unless asked for DER: same resource.
    assert parse_url("https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=b0c06f000000").kind \
        is Kind.TDX_TCB_INFO
    assert parse_url("https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform") \
        == endpoints.pck_crl("platform")


@pytest.mark.parametrize("url", [
    "https://evil.example/tdx/certification/v4/tcb?fmspc=B0C06F000000",
    "http://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000",
    "https://api.trustedservices.intel.com:8443/tdx/certification/v4/tcb?fmspc=B0C06F000000",
    "https://user@kdsintf.amd.com/vcek/v1/Milan/crl",
    "https://kdsintf.amd.com.evil.example/vcek/v1/Milan/crl",
    "file:///etc/passwd",
])
def test_hosts_outside_the_allowlist_are_refused(url):
    with pytest.raises(HostNotAllowed) as ei:
        parse_url(url)
    assert ei.value.code == "collateral.host_not_allowed"


@pytest.mark.parametrize("url", [
    "https://api.trustedservices.intel.com/sgx/certification/v4/pckcert?qeid=00",
    "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F00",
    "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000&fmspc=00806F050000",
    "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000&x=1",
    "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=other",
    "https://kdsintf.amd.com/vcek/v1/Bergamo/cert_chain",
    "https://kdsintf.amd.com/vcek/v1/Milan/00?blSPL=1&teeSPL=0&snpSPL=8&ucodeSPL=115",
    f"https://kdsintf.amd.com/vcek/v1/Milan/{'00' * 64}?blSPL=1&teeSPL=0&snpSPL=8&ucodeSPL=300",
    f"https://kdsintf.amd.com/vcek/v1/Milan/{'00' * 64}?blSPL=1&teeSPL=0&snpSPL=8",
    "https://kdsintf.amd.com/vcek/v1/Milan/../../admin",
    "https://certificates.trustedservices.intel.com/IntelSGXPCKProcessor.der",
])
def test_unknown_endpoints_are_refused(url):
    with pytest.raises(UrlNotAllowed):
        parse_url(url)


def test_builders_check_their_types():
    with pytest.raises(UrlNotAllowed):
        endpoints.tcb_info("tdx", b"\x00" * 5)
    with pytest.raises(UrlNotAllowed):
        endpoints.vcek("Milan", bytes(8), AmdTcb(1, 2, 3, 4))
    with pytest.raises(UrlNotAllowed):
        endpoints.vcek("Milan", bytes(64), AmdTcb(1, 2, 3, 4, fmc=1))
    with pytest.raises(UrlNotAllowed):
        AmdTcb(256, 0, 0, 0)


def test_top_level_spans_keep_exact_bytes():
    body = b'{ "tcbInfo" : {"b":1,  "a":[1, 2]} , "signature":"ab"}'
    spans = top_level_spans(body)
    assert spans == {"tcbInfo": b'{"b":1,  "a":[1, 2]}', "signature": b'"ab"'}


@pytest.mark.parametrize("body", [b"[]", b'{"a":1,"a":2}', b'{"a":1} x', b'{"a":', b"\xff", b'{"a" 1}'])
def test_top_level_spans_refuse_malformed(body):
    with pytest.raises(CollateralInvalid):
        top_level_spans(body)
