"""The INSECURE sim TD's state on disk: its event log, so a CVM boot and its loader share one TD.

``agent request --sim`` boots the TD (a fresh log of the sim's measured boot); ``agent
loader-request --sim`` appends the loader's ``ca-service.load.<role>`` events to the same log. The
report's RTMRs are always the replay of that log (``evidence/sim/eventlog.py``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ca_service.config import Settings
from ca_service.evidence.sim import eventlog
from ca_service.evidence.sim.attester import InsecureSimTee, SimTd


def state_file(settings: Settings) -> Path:
    from ca_service.services.bootstrap import sim_tee_dir

    return sim_tee_dir(settings) / "td-eventlog.json"


def _tee(settings: Settings) -> InsecureSimTee:
    from ca_service.services.bootstrap import load_sim_tee

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(settings)
    if not isinstance(tee, InsecureSimTee):
        raise TypeError("not a sim TEE")
    return tee


def boot(settings: Settings, path: Path | None = None) -> SimTd:
    """A fresh boot of the sim TD: its log holds the measured boot only."""
    td = SimTd(_tee(settings))
    save(td, path or state_file(settings))
    return td


def current(settings: Settings, path: Path | None = None) -> SimTd:
    """The booted sim TD (booting it first if it never was)."""
    path = path or state_file(settings)
    if not path.exists():
        return boot(settings, path)
    return SimTd(_tee(settings), eventlog.from_json_bytes(path.read_bytes()))


def save(td: SimTd, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(td.log_bytes())
    os.replace(tmp, path)
