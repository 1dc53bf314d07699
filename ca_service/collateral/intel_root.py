"""The Intel SGX Root CA certificate, needed to check the Root CA CRL (which comes with no issuer
chain). It is trusted only because its SHA-256 equals the pin in ``evidence/trust.py``: see
:func:`intel_root`."""

from __future__ import annotations

from cryptography import x509

from ca_service.errors import RootUntrusted
from ca_service.evidence.trust import TrustRoots, is_pinned

INTEL_SGX_ROOT_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""


def intel_root(pins: frozenset[str]) -> x509.Certificate:
    """The Intel SGX Root CA, if it is pinned in ``pins``.

    Raises:
        RootUntrusted (``evidence.root_untrusted``): the configured pins do not include it.
    """
    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    if not is_pinned(cert, pins):
        raise RootUntrusted("the Intel SGX Root CA is not pinned")
    return cert


def intel_roots(roots: TrustRoots) -> tuple[x509.Certificate, ...]:
    """Every pinned Intel root certificate known by content: the Intel SGX Root CA and any
    ``roots.intel_certs`` (a test root, ``TrustRoots.with_test_root``) whose SHA-256 is pinned.

    Raises:
        RootUntrusted (``evidence.root_untrusted``): none of them is pinned.
    """
    known = [x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)]
    known += [x509.load_der_x509_certificate(der) for der in roots.intel_certs]
    out = tuple(c for c in known if is_pinned(c, roots.intel))
    if not out:
        raise RootUntrusted("the Intel SGX Root CA is not pinned")
    return out
