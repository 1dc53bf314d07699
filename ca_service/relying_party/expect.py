"""Expectations a relying party states about a certificate's EAR (``--expect KEY=VALUE``).

Each expectation is one leaf; an expectation naming something the EAR lacks fails, it never passes
silently. Names (docs/relying-party.md):

- ``tee``: the TEE type of any evidence item (``tdx``, ``sgx``, ``snp``, ``nvidia``, ``nitro``, ``sim``;
  the evidence kind the EAR records, ``tdx-quote``, ``snp-report``..., matches too)
- ``policy``: ``NAME`` or ``NAME@VERSION`` of the appraisal policy
- ``status``: the overall EAR status (``affirming``, ``warning``, ``contraindicated``)
- ``profile``: the CA profile the certificate was issued under (``production``, ``insecure-dev``)
- a measurement register of any evidence item: ``mrtd``, ``rtmr0``..``rtmr3``, ``mrseam``,
  ``measurement`` (SNP), ``host_data``, ``mrenclave``, ``mrsigner``, ``pcr0``...
- any other claim ``X`` an evidence item carries as ``ca-service.X`` (for a loader: ``engine``,
  ``loaded-digests``); a list claim matches when it holds the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ca_service.errors import RequestError

_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

# The TEE type of each evidence kind the registry verifies (the EAR's ``ca-service.tee`` is the kind):
# ``tee=tdx`` is what a relying party writes for a TDX quote (tests check every kind has its name).
TEE_OF_KIND = {"tdx-quote": "tdx", "sgx-quote": "sgx", "snp-report": "snp", "nvidia-gpu": "nvidia",
               "nitro": "nitro", "sim": "sim"}


@dataclass(frozen=True)
class Expectation:
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Expectation:
        """``KEY=VALUE``.

        Raises:
            RequestError (``request.invalid``): not KEY=VALUE with a lower-case key.
        """
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if not sep or not _NAME.fullmatch(key) or not value.strip():
            raise RequestError(f"--expect must be KEY=VALUE (got {text!r})", where="expect")
        return cls(key, value.strip())

    def check(self, ear: dict[str, Any]) -> tuple[bool, str]:
        """Whether the EAR meets this expectation, and what it holds instead."""
        found = _lookup(ear, self.key)
        if not found:
            return False, f"the EAR has no claim named {self.key!r}"
        want = _norm(self.value)
        if self.key == "policy":
            ok = any(want == v or want == v.split("@")[0] for v in found)
        else:
            ok = want in found
        shown = ", ".join(sorted(found))[:300]
        return ok, (f"{self.key} = {self.value}" if ok else f"{self.key} is {shown}, expected {self.value}")


def _norm(value: Any) -> str:
    text = str(value).strip()
    if re.fullmatch(r"(0x)?[0-9a-fA-F]+", text) or re.fullmatch(r"sha(256|384|512):[0-9a-fA-F]+", text):
        return text.lower().removeprefix("0x")
    return text


def _submods(ear: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in (ear.get("submods") or {}).values() if isinstance(s, dict)]


def _values(value: Any) -> set[str]:
    if isinstance(value, list):
        return {_norm(v) for v in value if isinstance(v, (str, int))}
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return {_norm(value)}
    if isinstance(value, bool):
        return {"true" if value else "false"}
    return set()


def _lookup(ear: dict[str, Any], key: str) -> set[str]:
    """Every value the EAR holds under ``key`` (over all evidence items)."""
    subs = _submods(ear)
    if key == "status":
        return _values(ear.get("ear.status"))
    if key == "profile":
        return _values(ear.get("ca-service.profile"))
    if key == "tee":
        kinds = {_norm(s["ca-service.tee"]) for s in subs if isinstance(s.get("ca-service.tee"), str)}
        return kinds | {TEE_OF_KIND[k] for k in kinds if k in TEE_OF_KIND}
    if key == "policy":
        out = set()
        for pid in [ear.get("ear.appraisal-policy-id"), *[s.get("ear.appraisal-policy-id") for s in subs]]:
            m = re.fullmatch(r"urn:ca-service:policy:([^@#]+)@(\d+)(#.*)?", str(pid or ""))
            if m:
                out.add(f"{m.group(1)}@{m.group(2)}")
        return out
    found: set[str] = set()
    for s in subs:
        regs = s.get("ca-service.measurements")
        if isinstance(regs, dict) and key in regs:
            found |= _values(regs[key])
        for name in (f"ca-service.{key}", f"ca-service.{key.replace('_', '-')}", key):
            if name in s:
                found |= _values(s[name])
    for name in (f"ca-service.{key}", f"ca-service.{key.replace('_', '-')}"):
        if name in ear:
            found |= _values(ear[name])
    return found
