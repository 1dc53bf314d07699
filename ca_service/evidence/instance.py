"""Which TEE instance a verified evidence item attests (PURE; DESIGN.md flow 2).

A trusted loader's certificate links to the certificate of the CVM it runs in. "The same TEE
instance" is decided by each family from registers the loader cannot change after boot:

- ``tdx-quote`` and ``sim``: MRTD, RTMR0, RTMR1, RTMR2, the TD's build and measured boot. RTMR3
  is left to the guest: that is where the loader measures what it loads.
- ``snp-report``: MEASUREMENT and CHIP_ID (SEV-SNP ABI, table 23), the launch digest and the chip
  it runs on. A guest that masks CHIP_ID reports zeros, and then only the launch digest counts.

Other families (GPUs, Nitro, SGX) carry no CVM identity; a composite request takes the first
item that does. The identity is the SHA-256 of ``kind`` and the registers in this order, so two
items of different families never collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ca_service.evidence.base import VerifiedEvidence

INSTANCE_REGISTERS: dict[str, tuple[str, ...]] = {
    "tdx-quote": ("mrtd", "rtmr0", "rtmr1", "rtmr2"),
    "sim": ("mrtd", "rtmr0", "rtmr1", "rtmr2"),
    "snp-report": ("measurement", "chip_id"),
}


@dataclass(frozen=True)
class InstanceId:
    """One TEE instance: the family, the registers that name it, and their digest."""

    kind: str
    registers: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        text = "\n".join([f"ca-service/instance/v1 {self.kind}", *(f"{k}={v}" for k, v in self.registers)])
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> str:
        return f"{self.kind} " + ", ".join(f"{k} {v[:16]}..." for k, v in self.registers)


def instance_of(ve: VerifiedEvidence) -> InstanceId | None:
    """The instance ``ve`` attests, or None when its family names none (or a register is missing)."""
    names = INSTANCE_REGISTERS.get(ve.kind)
    if names is None:
        return None
    values = []
    for name in names:
        value = ve.claims.get(name)
        if not isinstance(value, str) or not value:
            return None
        values.append((name, value.lower()))
    return InstanceId(ve.kind, tuple(values))


def instance_of_items(items: Sequence[VerifiedEvidence]) -> InstanceId | None:
    """The instance of a composite appraisal: its first item whose family names one."""
    for ve in items:
        found = instance_of(ve)
        if found is not None:
            return found
    return None
