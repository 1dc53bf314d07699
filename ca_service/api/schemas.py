"""Request and response schemas at the edge (pydantic v2; their JSON Schema feeds OpenAPI)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ca_service.errors import SchemaViolation

if TYPE_CHECKING:
    from ca_service.services.issuance import EvidenceItem

MAX_EVIDENCE_B64 = 1_500_000
MAX_EVENT_LOG_B64 = 2_800_000  # 2 MiB of log bytes (a CCEL log area is typically 64 KiB - 1 MiB)


def b64decode_strict(value: str, what: str) -> bytes:
    """Strict standard base64 (no stray characters); ValueError names ``what``."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


class EvidenceItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=32)
    data: str = Field(min_length=1, max_length=MAX_EVIDENCE_B64)
    collateral: list[str] = Field(default_factory=list, max_length=16)
    event_log: str | None = Field(default=None, min_length=1, max_length=MAX_EVENT_LOG_B64,
                                  description="base64 CCEL or dstack JSON event log (tdx-quote, sim): "
                                              "replayed against the verified RTMRs (docs/event-log.md)")
    ima_log: str | None = Field(default=None, min_length=1, max_length=MAX_EVENT_LOG_B64,
                                description="base64 IMA runtime measurement list (SHA-384 bank), replayed into "
                                            "RTMR2 after event_log")

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
            if len(item) > MAX_EVIDENCE_B64:
                raise ValueError("collateral item too large")
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

    challenge_id: str = Field(min_length=1, max_length=64)
    csr: str = Field(min_length=1, max_length=16384)
    policy: str = Field(min_length=1, max_length=64)
    evidence: list[EvidenceItemIn] = Field(min_length=1, max_length=9)
    lifetime_seconds: int | None = Field(default=None, gt=0, le=366 * 86400)
    # a loader policy: the CVM certificate to link to (default: the newest valid one of the same TEE instance)
    cvm_serial: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-fA-F]{1,42}$")


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
