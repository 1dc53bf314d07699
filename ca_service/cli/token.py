"""``ca-service token create|revoke|list``: API bearer tokens (the secret is printed once)."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from ca_service.cli.common import actor, open_services
from ca_service.errors import PolicyError
from ca_service.policy.model import parse_duration
from ca_service.services import tokens


@click.group("token")
def token() -> None:
    """API bearer tokens (roles: admin, auditor)."""


@token.command("create")
@click.option("--role", type=click.Choice(tokens.ROLES), required=True)
@click.option("--name", default=None, help="a label for the audit log (default: the role)")
@click.option("--expires-in", default=tokens.DEFAULT_LIFETIME_TEXT, show_default=True,
              help="lifetime such as 30d or 12h; 'never' for a token that does not expire (ask for it)")
@click.option("--json", "as_json", is_flag=True)
def create(role: str, name: str | None, expires_in: str, as_json: bool) -> None:
    """Create a token and print its secret (shown once; only its SHA-256 is stored).

    Tokens expire after 90 days unless --expires-in says otherwise; a token that never expires
    must be asked for with --expires-in never.
    """
    lifetime = _lifetime(expires_in)
    created = tokens.create_token(open_services(), role=role, name=name or role, expires_in=lifetime,
                                  actor=actor())
    if as_json:
        click.echo(json.dumps({"id": created.id, "name": created.name, "role": created.role,
                               "token": created.secret,
                               "expires_at": created.expires_at.isoformat() if created.expires_at else None}))
        return
    click.echo(f"token {created.id} ({created.role}, {created.name}), "
               f"expires {created.expires_at.isoformat() if created.expires_at else 'never'}", err=True)
    click.echo(created.secret)


def _lifetime(text: str) -> timedelta | None:
    if text.strip().lower() == "never":
        return None
    try:
        return parse_duration(text)
    except (PolicyError, ValueError) as exc:
        raise click.BadParameter(f"{text!r} is not a duration such as 30d or 12h, nor 'never'",
                                 param_hint="--expires-in") from exc


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
