"""Shared CLI helpers."""

from __future__ import annotations

import getpass

from ca_service.config import Settings
from ca_service.services.container import Services


def settings_from_env() -> Settings:
    return Settings.from_env()


def open_services() -> Services:
    return Services.create(settings_from_env())


def actor() -> str:
    """Who the audit table and the log name for a CLI action: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
