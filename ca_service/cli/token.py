"""``ca-service token create|revoke|list``: API bearer tokens (the secret is printed once)."""

from __future__ import annotations

import json

import click

from ca_service.cli.common import actor, open_services
from ca_service.policy.model import parse_duration
from ca_service.services import tokens


@click.group("token")
def token() -> None:
    """API bearer tokens (roles: admin, auditor)."""


@token.command("create")
@click.option("--role", type=click.Choice(tokens.ROLES), required=True)
@click.option("--name", default=None, help="a label for the audit log (default: the role)")
@click.option("--expires-in", default=None, help="lifetime such as 30d or 12h (default: no expiry)")
@click.option("--json", "as_json", is_flag=True)
def create(role: str, name: str | None, expires_in: str | None, as_json: bool) -> None:
    """Create a token and print its secret (shown once; only its SHA-256 is stored)."""
    created = tokens.create_token(open_services(), role=role, name=name or role,
                                  expires_in=parse_duration(expires_in) if expires_in else None, actor=actor())
    if as_json:
        click.echo(json.dumps({"id": created.id, "name": created.name, "role": created.role,
                               "token": created.secret,
                               "expires_at": created.expires_at.isoformat() if created.expires_at else None}))
        return
    click.echo(f"token {created.id} ({created.role}, {created.name}), "
               f"expires {created.expires_at.isoformat() if created.expires_at else 'never'}", err=True)
    click.echo(created.secret)


@token.command("revoke")
@click.argument("token_id", type=int)
def revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `token list`)."""
    changed = tokens.revoke_token(open_services(), token_id, actor=actor())
    click.echo(f"token {token_id} {'revoked' if changed else 'was already revoked'}")


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List tokens (never their secrets)."""
    rows = tokens.list_tokens(open_services())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "revoked" if r["revoked_at"] else f"expires {r['expires_at'] or 'never'}"
        click.echo(f"{r['id']}\t{r['role']}\t{r['name']}\t{state}")
