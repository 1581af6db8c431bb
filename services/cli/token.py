"""`tidings token`: print a signed stream token for a user."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from tidings.shared.db import asyncpg_dsn
from tidings.shared.errors import TidingsError
from tidings.shared.settings import Settings
from tidings.shared.subjects import user_audience

_USER_BY_EMAIL = "SELECT id FROM galaxy_user WHERE email = $1 AND NOT deleted"


def add_token_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `token` subcommand to the `tidings` parser."""
    token = commands.add_parser(
        "token",
        help="print a signed stream token for a user",
        description="Print a stream token signed with TIDINGS_TOKEN_SECRET, for "
        "GET /api/events/stream?token=... or an Authorization: Bearer header.",
    )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", type=int, help="id of the user in galaxy_user")
    who.add_argument("--email", help="email of the user, looked up in the database")
    token.add_argument(
        "--ttl",
        type=float,
        help="seconds the token stays valid (default: TIDINGS_TOKEN_TTL_SECONDS)",
    )
    token.add_argument("--database-url", help="overrides TIDINGS_DATABASE_URL")


def run_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print the token the arguments ask for; return the exit code."""
    # Imported here, so other subcommands load no edge code.
    from tidings.edge.tokens import TokenSigner

    ttl = settings.token_ttl_seconds if args.ttl is None else args.ttl
    if ttl <= 0:
        raise TidingsError(f"--ttl must be positive, not {ttl}")
    signer = TokenSigner(settings.token_secret, ttl)
    user_id = args.user_id
    if user_id is None:
        user_id = asyncio.run(_user_id_by_email(settings.database_url, args.email))
    print(signer.mint(user_audience(user_id), user_id))
    return 0


async def _user_id_by_email(database_url: str, email: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        user_id = await conn.fetchval(_USER_BY_EMAIL, email)
    finally:
        await conn.close()
    if user_id is None:
        raise TidingsError(f"no user with email {email!r}")
    return user_id
