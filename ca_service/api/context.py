"""Access to the service container from inside a request."""

from __future__ import annotations

from flask import current_app

from ca_service.services.container import Services


def services() -> Services:
    svc: Services = current_app.extensions["ca_service"]
    return svc
