"""Pinned trust anchors, kept apart by vendor.

A root is trusted only if the SHA-256 of its DER equals a pin listed here (or, for the development
``sim`` TEE, a pin the deployment adds explicitly). Roots carried inside evidence are never trusted
by being present: they must match a pin.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace

from cryptography import x509

from ca_service.crypto.certs import der_sha256

# SHA-256 of the DER of each vendor root (../shared/vectors/README.md lists the same values).
INTEL_SGX_ROOT_CA = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
AMD_ARK_MILAN = "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
AMD_ARK_GENOA = "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
# ARK-Turin as served by AMD KDS /vcek/v1/Turin/cert_chain (copy in tests/vectors/amd-turin, from
# virtee/sev, whose Milan and Genoa ARKs hash to exactly the two pins above): self-signed RSA-4096,
# 2023-05-15 .. 2048-05-15.
AMD_ARK_TURIN = "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
NVIDIA_DEVICE_IDENTITY_CA = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
NVIDIA_RIM_ROOT_CA = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"
AWS_NITRO_ROOT_G1 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


@dataclass(frozen=True)
class TrustRoots:
    """SHA-256 pins per trust domain. ``sim`` is empty unless a development deployment adds one."""

    intel: frozenset[str] = frozenset({INTEL_SGX_ROOT_CA})
    amd: frozenset[str] = frozenset({AMD_ARK_MILAN, AMD_ARK_GENOA, AMD_ARK_TURIN})
    nvidia_device: frozenset[str] = frozenset({NVIDIA_DEVICE_IDENTITY_CA})
    nvidia_rim: frozenset[str] = frozenset({NVIDIA_RIM_ROOT_CA})
    nitro: frozenset[str] = frozenset({AWS_NITRO_ROOT_G1})
    sim: frozenset[str] = field(default_factory=frozenset)
    # Intel root certificates (DER) known beside the built-in one, for the check that comes with no
    # chain: the Root CA CRL is signed by the root itself (collateral/intel_root.py). Each is used only
    # if its SHA-256 is among ``intel``.
    intel_certs: tuple[bytes, ...] = ()

    def with_sim_root(self, root_der: bytes) -> TrustRoots:
        return replace(self, sim=self.sim | {hashlib.sha256(root_der).hexdigest()})

    def with_test_root(self, domain: str, root_der: bytes) -> TrustRoots:
        """These roots and ``root_der`` pinned in ``domain`` (intel, amd, nvidia_device, nvidia_rim, nitro).

        For tests only: the CA reaches this through ``CA_SERVICE_INSECURE_TEST_ROOTS``, which the
        production profile refuses (services/roots.py).

        Raises:
            ValueError: an unknown domain.
        """
        if domain not in ("intel", "amd", "nvidia_device", "nvidia_rim", "nitro"):
            raise ValueError(f"unknown trust domain {domain!r}")
        pin = hashlib.sha256(root_der).hexdigest()
        out = replace(self, **{domain: getattr(self, domain) | {pin}})
        if domain == "intel" and root_der not in self.intel_certs:
            out = replace(out, intel_certs=(*self.intel_certs, root_der))
        return out


DEFAULT_ROOTS = TrustRoots()


def is_pinned(cert: x509.Certificate, pins: frozenset[str]) -> bool:
    """True iff the DER of ``cert`` hashes to one of ``pins`` (constant-time per comparison)."""
    return digest_pinned(der_sha256(cert), pins)


def digest_pinned(digest: str, pins: frozenset[str]) -> bool:
    """True iff ``digest`` (a DER's SHA-256, lower-case hex) is one of ``pins`` (constant-time per pin)."""
    found = False
    for pin in pins:
        found |= hmac.compare_digest(digest, pin)
    return found
