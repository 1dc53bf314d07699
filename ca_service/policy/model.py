"""Policy documents: YAML -> validated, normalised, content-addressed :class:`Policy`.

The digest is SHA-256 over the RFC 8785 canonical JSON of the normalised document
(docs/adr/0003-policy-canonicalisation.md): the same document, however it is formatted in YAML,
gets the same digest, so applying it twice yields the same version.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import rfc8785
import yaml

from ca_service.errors import PolicyError, PolicyGpuOnly
from ca_service.evidence.revocation import RevocationRule

MAX_POLICY_DEPTH = 32
MAX_POLICY_BYTES = 64 * 1024
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    text = resources.files("ca_service.policy").joinpath("policy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    if m is None:
        raise PolicyError(f"{text!r} is not a duration like 24h")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _normalise(value: Any, path: str = "") -> Any:
    """Stringify mapping keys (YAML `0:` becomes "0"), lower-case hex, refuse non-JSON values."""
    if isinstance(value, dict):
        return {str(k): _normalise(v, f"{path}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, path) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{32,}", value):
            return value.lower()
        return value
    if isinstance(value, float):
        raise PolicyError(f"{path or '/'}: floats are not allowed in policies")
    raise PolicyError(f"{path or '/'}: unsupported YAML value of type {type(value).__name__}")


@dataclass(frozen=True)
class Policy:
    """A validated policy document. Immutable; identified by ``digest``."""

    name: str
    document: dict[str, Any]
    canonical: bytes
    digest: str

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.document["evidence"]["required"])

    def rules(self, kind: str) -> dict[str, Any]:
        section: dict[str, Any] = self.document["evidence"].get(kind, {})
        return section

    @property
    def max_lifetime(self) -> timedelta:
        return parse_duration(self.document["certificate"]["max_lifetime"])

    @property
    def certificate(self) -> dict[str, Any]:
        cert: dict[str, Any] = self.document["certificate"]
        return cert

    @property
    def is_loader(self) -> bool:
        """A loader policy: some evidence section lists ``loader_digests``. Its certificates link to
        a CVM certificate of the same TEE instance, and they are the ones that sign integrity reports."""
        return any(isinstance(v, dict) and "loader_digests" in v for v in self.document["evidence"].values())

    @property
    def integrity_reports(self) -> dict[str, Any]:
        """The ``integrity_reports`` section (what a report signed under this policy must match)."""
        section: dict[str, Any] = self.document.get("integrity_reports", {})
        return section

    @property
    def revocation_rule(self) -> RevocationRule:
        """What the policy accepts when revocation cannot be established (``evidence/revocation.py``):
        ``revocation.allow_unchecked`` (default false) and the grace ``collateral.max_age_past_next_update``
        (default 0) for a source past its next update."""
        grace = self.document.get("collateral", {}).get("max_age_past_next_update")
        allow = self.document.get("revocation", {}).get("allow_unchecked", False)
        return RevocationRule(allow_unchecked=allow is True, grace=parse_duration(grace) if grace else timedelta(0))

    @property
    def allows_sim(self) -> bool:
        return "sim" in self.required

    @property
    def allow_unchecked_revocation(self) -> bool:
        """``revocation.allow_unchecked``: a missing or unusable revocation source is accepted
        (the EAR then carries a warning naming the item); default false."""
        return self.revocation_rule.allow_unchecked

    def policy_id(self, version: int) -> str:
        return f"urn:ca-service:policy:{self.name}@{version}#sha256:{self.digest}"


def policy_from_document(doc: Any) -> Policy:
    """Validate a decoded document and build the Policy.

    Raises:
        PolicyError (``policy.invalid``): schema violation, empty or unknown section, or a
        required evidence type without a section (fail closed).
    """
    if not isinstance(doc, dict):
        raise PolicyError("a policy is a mapping at the top level")
    doc = _normalise(doc)
    validator = jsonschema.Draft202012Validator(policy_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/" + "/".join(str(p) for p in first.absolute_path)
        raise PolicyError(f"{where}: {first.message}", errors=[
            {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors[:20]
        ])
    evidence = doc["evidence"]
    sections = {k for k in evidence if k != "required"}
    required = set(evidence["required"])
    if missing := sorted(required - sections):
        raise PolicyError(f"evidence types {missing} are required but have no reference values")
    if extra := sorted(sections - required):
        raise PolicyError(f"evidence sections {extra} are not listed in evidence.required")
    parse_duration(doc["certificate"]["max_lifetime"])
    canonical = rfc8785.dumps(doc)
    return Policy(name=doc["name"], document=doc, canonical=canonical, digest=hashlib.sha256(canonical).hexdigest())


# Evidence that attests the machine holding the CSR's key (its report data binds the key); a GPU
# attests only itself. DESIGN.md flow 1: the GPU item rides along with one of these, bound to the
# same challenge and key.
KEY_ATTESTING_KINDS = frozenset({"tdx-quote", "sgx-quote", "snp-report", "nitro", "sim"})
GPU_KINDS = frozenset({"nvidia-gpu"})


def check_applicable(policy: Policy) -> None:
    """What a policy must be to be applied or activated (beyond the schema).

    Raises:
        PolicyGpuOnly (``policy.gpu_only``): GPU evidence is required but no CPU TEE item is: a GPU
            cannot attest where the CSR's key lives, so such a policy would admit any key.
    """
    required = set(policy.required)
    if required & GPU_KINDS and not required & KEY_ATTESTING_KINDS:
        raise PolicyGpuOnly(
            f"evidence.required {sorted(required)} has GPU evidence but no CPU TEE item "
            f"(one of {sorted(KEY_ATTESTING_KINDS)}) bound to the same challenge and key",
            required=sorted(required))


def load_policy(source: str | bytes) -> Policy:
    """Parse a YAML (or JSON) policy document.

    Raises:
        PolicyError (``policy.invalid``).
    """
    if len(source) > MAX_POLICY_BYTES:
        raise PolicyError("policy document is larger than 64 KiB")
    try:
        _refuse_aliases_and_depth(source)
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise PolicyError("policy is not valid YAML") from exc
    return policy_from_document(doc)


def _refuse_aliases_and_depth(source: str | bytes) -> None:
    """Walk the YAML event stream (no tree is built) before loading it.

    Anchors and aliases are refused: a policy never needs them, and a few hundred bytes of nested
    aliases ("billion laughs") expand to a tree that hangs whatever walks it (the schema check, the
    canonical digest). Nesting is bounded like JSON's, so the composer's recursion stays shallow.

    Raises:
        PolicyError (``policy.invalid``).
    """
    depth = 0
    # libyaml's event parser where it is built in: the pure-Python scanner reads a long flow
    # collection ahead before giving its first event
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(source, Loader=loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise PolicyError("policy YAML uses anchors or aliases, which are not allowed")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_POLICY_DEPTH:
                raise PolicyError(f"policy nests deeper than {MAX_POLICY_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def policy_from_canonical(canonical: bytes) -> Policy:
    doc = json.loads(canonical)
    return policy_from_document(doc)
