"""``lmforge keys create``, ``list`` and ``revoke``: the server's API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.output import out, print_json


def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="predict, feedback or admin (repeat for several)."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    key, secret = KeyStore(Registry().engine).create(name, scope)
    if json_output:
        print_json({**key.to_json(), "key": secret})
        return
    out.print(f"created key '{key.name}' (id {key.id}, scopes {', '.join(key.scopes)})")
    out.print("the secret is shown only now; store it safely:", highlight=False)
    print(secret)


def keys_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API keys (names, prefixes, scopes; never the secrets)."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    keys = KeyStore(Registry().engine).all()
    if json_output:
        print_json([k.to_json() for k in keys])
        return
    table = Table(title="API keys")
    for column in ("id", "name", "prefix", "scopes", "created", "status"):
        table.add_column(column)
    for k in keys:
        status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        table.add_row(
            str(k.id),
            k.name,
            k.prefix + "…",
            ", ".join(k.scopes),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            status,
        )
    out.print(table)


def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's name, id or prefix.")],
) -> None:
    """Revoke API keys; servers refuse them within auth.cache_seconds."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    for k in KeyStore(Registry().engine).revoke(key):
        out.print(f"revoked key '{k.name}' (id {k.id})")
