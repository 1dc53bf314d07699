"""The agent's evidence source on a real TEE: configfs-tsm for the report, plus what the policy needs
(the TDX CCEL event log; the SNP host's certificate table as collateral)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca_service.agent.client import AgentError
from ca_service.agent.tsm import CCEL_PATH, TSM_ROOT, TsmError, read_ccel, tsm_request

EVENT_LOG_MODES = ("auto", "always", "never")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class TsmEvidenceSource:
    """``source(report_data) -> (type, evidence, extra)`` for :func:`request_certificate`.

    ``event_log``: ``auto`` sends the CCEL when ``needs`` (``GET /v1/attestations/needs``) says the
    policy needs the event log of this evidence type; ``always`` / ``never`` override. ``notes``
    collects what the agent did and did not send, for the operator.
    """

    needs: dict[str, Any] | None = None
    event_log: str = "auto"
    root: Path = TSM_ROOT
    ccel_path: Path = CCEL_PATH
    privlevel: int | None = None
    gpu: str = "auto"
    gpu_loader: Callable[[], Any] | None = None
    notes: list[str] = field(default_factory=list)

    def wants_gpu(self) -> bool:
        """``auto``: when the policy requires ``nvidia-gpu`` (an unrequested type would be refused)."""
        if self.gpu != "auto":
            return self.gpu == "always"
        return "nvidia-gpu" in ((self.needs or {}).get("required") or [])

    def wants_log(self, kind: str) -> bool:
        if self.event_log != "auto":
            return self.event_log == "always"
        items = (self.needs or {}).get("items", {})
        return bool(isinstance(items, dict) and items.get(kind, {}).get("event_log"))

    def __call__(self, report_data: bytes) -> list[tuple[str, bytes, dict[str, Any]]]:
        items = [self._cpu(report_data)]
        if self.wants_gpu():
            from ca_service.agent.gpu import gpu_evidence

            gpus, note = gpu_evidence(report_data[:32], *(() if self.gpu_loader is None else (self.gpu_loader,)))
            self.notes.append(note)
            if not gpus:
                raise AgentError(f"the policy requires NVIDIA GPU evidence; {note.split(': ', 1)[1]}")
            items.extend(gpus)
        elif self.gpu == "auto":
            self.notes.append("GPU: not sent (the policy does not require nvidia-gpu)")
        return items

    def _cpu(self, report_data: bytes) -> tuple[str, bytes, dict[str, Any]]:
        try:
            rep = tsm_request(report_data, self.root, privlevel=self.privlevel)
        except (OSError, TsmError) as exc:
            raise AgentError(f"configfs-tsm at {self.root}: {exc}") from exc
        self.notes.append(f"{rep.kind} from configfs-tsm provider {rep.provider} ({len(rep.outblob)} bytes)")
        extra: dict[str, Any] = {}
        if self.wants_log(rep.kind):
            if rep.kind != "tdx-quote":
                raise AgentError(f"the policy needs an event log for {rep.kind}, which has none to send")
            ccel = read_ccel(self.ccel_path)
            if ccel is None:
                raise AgentError(f"the policy needs the TD's event log, but {self.ccel_path} does not exist")
            extra["event_log"] = _b64(ccel)
            self.notes.append(f"event log: CCEL from {self.ccel_path} ({len(ccel)} bytes)")
        elif rep.kind == "tdx-quote":
            self.notes.append("event log: not sent (the policy does not need it)" if self.event_log == "auto"
                              else "event log: not sent (--event-log never)")
        if rep.certificates:
            # the CA judges by its own collateral; the host's VCEK/ASK/ARK only fill what it lacks
            extra["collateral"] = [_b64(der) for _, der in sorted(rep.certificates.items())]
            self.notes.append(f"collateral: {', '.join(sorted(rep.certificates))} from the host's certificate table")
        return rep.kind, rep.outblob, extra
