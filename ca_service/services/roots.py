"""The trust roots this CA verifies evidence and collateral with (evidence/trust.py pins them by SHA-256).

Vendor roots always; the sim TEE's root in the insecure-dev profile only; and, for tests only, the
roots named by ``CA_SERVICE_INSECURE_TEST_ROOTS`` (``DOMAIN=PEM_FILE,...``), so that a test PKI made
in the shape of a vendor's (tests/collateral/testroot.py: a test "Intel SGX Root CA", PCK CAs, TCB
signing key) is judged end to end by the production code: collateral import, issuance, re-appraisal.
The setting is refused in the production profile (config.py) and warns whenever it is loaded.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_service.config import Settings
from ca_service.errors import ConfigurationError
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots
from ca_service.services.container import Services


class InsecureTestRootsWarning(UserWarning):
    """Test roots are pinned beside the vendor roots: evidence they sign is accepted as genuine."""


@functools.lru_cache(maxsize=16)
def _load(pairs: tuple[tuple[str, Path], ...]) -> tuple[tuple[str, bytes], ...]:
    out = []
    for domain, path in pairs:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"CA_SERVICE_INSECURE_TEST_ROOTS: {path} holds no PEM certificate") from exc
        out += [(domain, c.public_bytes(serialization.Encoding.DER)) for c in certs]
    warnings.warn(f"CA_SERVICE_INSECURE_TEST_ROOTS pins {len(out)} test root(s) beside the vendor roots: "
                  "for tests only", InsecureTestRootsWarning, stacklevel=3)
    return tuple(out)


def with_test_roots(roots: TrustRoots, settings: Settings) -> TrustRoots:
    """``roots`` plus the settings' test roots (none unless CA_SERVICE_INSECURE_TEST_ROOTS is set).

    Raises:
        ConfigurationError (``config.invalid``): a file that holds no PEM certificate.
    """
    if not settings.insecure_test_roots or not settings.insecure:  # production refuses the setting (config.py)
        return roots
    for domain, der in _load(settings.insecure_test_roots):
        roots = roots.with_test_root(domain, der)
    return roots


def trust_roots(svc: Services) -> TrustRoots:
    """Vendor pins, plus the sim root's pin and any test roots in the insecure-dev profile only."""
    roots = DEFAULT_ROOTS
    if svc.settings.insecure and svc.keys.has("sim-root"):
        roots = roots.with_sim_root(svc.keys.certificate("sim-root").public_bytes(serialization.Encoding.DER))
    return with_test_roots(roots, svc.settings)
