"""Request and response schemas at the edge (pydantic v2; their JSON Schema feeds OpenAPI)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from ca_service.errors import SchemaViolation

if TYPE_CHECKING:
    from ca_service.services.issuance import EvidenceItem

MAX_EVIDENCE_B64 = 1_500_000
MAX_EVENT_LOG_B64 = 2_800_000  # 2 MiB of log bytes (a CCEL log area is typically 64 KiB - 1 MiB)
# policies/policy.schema.json: the names a policy can have; any other name is refused at the edge
POLICY_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
# an identifier from a client (a challenge id) is printable: no C0 control character, no DEL
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]+$"


# Standard base64 (RFC 4648 section 4) with its padding, and nothing else: no whitespace, no
# URL-safe alphabet, no missing or stray '=' (Python's decoder alone takes "AAAA=" and "AAAA==").
# The OpenAPI document states this same pattern for every base64 field (docs/openapi.json).
B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def b64_schema(description: str) -> dict[str, Any]:
    """The JSON Schema keywords of a base64 string field, as :func:`b64decode_strict` enforces them."""
    return {"contentEncoding": "base64", "pattern": B64_PATTERN, "description": description}


def b64decode_strict(value: str, what: str) -> bytes:
    """Strict standard base64 with padding (:data:`B64_PATTERN`); ValueError names ``what``."""
    # with validate=True (alphabet, at most two trailing '='), these two make it B64_PATTERN exactly,
    # without running that regex over megabytes: whole quanta, and '=' only as the last one's padding
    if len(value) % 4 or "=" in value[:-2]:
        raise ValueError(f"{what} is not valid base64 (standard alphabet, padded)")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


def integral(value: Any) -> Any:
    """For a ``mode="before"`` validator of an int field: JSON has one number type, so 5.0 is the
    integer 5 (JSON Schema's "integer" says so too) and a strict model takes it as 5; 5.5, "5" and
    true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _kinds() -> list[JsonValue]:
    from ca_service.evidence.registry import known_kinds

    return list(sorted(known_kinds()))


CollateralItem = Annotated[str, Field(max_length=MAX_EVIDENCE_B64, json_schema_extra=b64_schema(
    "one collateral item (DER, PEM or JSON as its vendor publishes it), base64"))]


class EvidenceItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=32, json_schema_extra={
        "enum": _kinds(), "description": "evidence kind; any other is refused with evidence.type_unknown"})
    data: str = Field(min_length=1, max_length=MAX_EVIDENCE_B64,
                      json_schema_extra=b64_schema("the evidence (quote, report, SPDM or COSE document), base64"))
    collateral: list[CollateralItem] = Field(default_factory=list, max_length=16)
    event_log: str | None = Field(
        default=None, min_length=1, max_length=MAX_EVENT_LOG_B64, json_schema_extra=b64_schema(
            "base64 CCEL or dstack JSON event log (tdx-quote, sim): replayed against the verified RTMRs "
            "(docs/event-log.md)"))
    ima_log: str | None = Field(default=None, min_length=1, max_length=MAX_EVENT_LOG_B64, json_schema_extra=b64_schema(
        "base64 IMA runtime measurement list (SHA-384 bank), replayed into RTMR2 after event_log"))

    @field_validator("event_log", "ima_log")
    @classmethod
    def _log_b64(cls, v: str | None) -> str | None:
        if v is not None:
            b64decode_strict(v, "event log")
        return v

    @field_validator("data")
    @classmethod
    def _data_b64(cls, v: str) -> str:
        b64decode_strict(v, "evidence data")
        return v

    @field_validator("collateral")
    @classmethod
    def _coll_b64(cls, v: list[str]) -> list[str]:
        for item in v:
            b64decode_strict(item, "collateral item")
        return v

    def data_bytes(self) -> bytes:
        return b64decode_strict(self.data, "evidence data")

    def collateral_bytes(self) -> tuple[bytes, ...]:
        return tuple(b64decode_strict(c, "collateral item") for c in self.collateral)

    def to_item(self) -> EvidenceItem:
        from ca_service.services.issuance import EvidenceItem

        return EvidenceItem(self.type, self.data_bytes(), self.collateral_bytes(),
                            event_log=b64decode_strict(self.event_log, "event log") if self.event_log else None,
                            ima_log=b64decode_strict(self.ima_log, "IMA log") if self.ima_log else None)


class CertificateRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    challenge_id: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN,
                              description="the id of a challenge from POST /v1/challenges")
    csr: str = Field(min_length=1, max_length=16384, description="PKCS#10 certificate request, PEM",
                     json_schema_extra={"contentMediaType": "application/x-pem-file"})
    policy: str = Field(min_length=1, max_length=63, pattern=POLICY_NAME_PATTERN)
    evidence: list[EvidenceItemIn] = Field(min_length=1, max_length=9)
    lifetime_seconds: int | None = Field(default=None, gt=0, le=366 * 86400)
    # a loader policy: the CVM certificate to link to (default: the newest valid one of the same TEE instance)
    cvm_serial: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-fA-F]{1,42}$")

    _lifetime = field_validator("lifetime_seconds", mode="before")(integral)


class ChallengeOut(BaseModel):
    id: str
    nonce: str
    expires_at: str


class CertificateOut(BaseModel):
    serial: str
    certificate_chain: str
    appraisal: dict[str, Any]
    ear: dict[str, Any]
    policy: dict[str, Any]
    log_index: int


def parse_model(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` against ``model``; refusals name each failing field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:20]]
        first = errors[0] if errors else {"field": "", "message": "invalid"}
        raise SchemaViolation(f"{first['field'] or 'body'}: {first['message']}", errors=errors) from None
