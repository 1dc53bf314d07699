"""``ca-service revoke SERIAL``."""

from __future__ import annotations

import click

from ca_service.ca.revocation import REASONS
from ca_service.cli.common import actor, open_services
from ca_service.services.revocation import revoke as revoke_certificate


@click.command("revoke")
@click.argument("serial")
@click.option("--reason", default="unspecified", type=click.Choice(sorted(REASONS)), show_default=True)
def revoke(serial: str, reason: str) -> None:
    """Revoke a certificate (it goes on the CRL, OCSP says revoked, the log gets a leaf)."""
    from ca_service.services.loaders import loaders_of

    svc = open_services()
    row = revoke_certificate(svc, serial, reason=reason, actor=actor())
    click.echo(f"revoked {row.serial} ({reason}) at {row.revoked_at.isoformat() if row.revoked_at else ''}")
    for loader, status in loaders_of(svc, row.serial):
        click.echo(f"  its loader certificate {loader}: {status}")
