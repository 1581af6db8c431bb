"""Alembic environment: runs migrations over asyncpg."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from tidings.shared.db import sqlalchemy_url


def _run(connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    """Run migrations against the database named in the Alembic config."""
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "TIDINGS_DATABASE_URL", ""
    )
    asyncio.run(_run_online(url))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; give a database URL")
run_migrations_online()
