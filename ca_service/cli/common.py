"""Shared CLI helpers."""

from __future__ import annotations

from ca_service.config import Settings
from ca_service.services.container import Services


def settings_from_env() -> Settings:
    return Settings.from_env()


def open_services() -> Services:
    return Services.create(settings_from_env())
