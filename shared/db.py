"""Postgres connection helpers for asyncpg (services) and SQLAlchemy (migrations)."""

from __future__ import annotations

import asyncpg

from tidings.shared.errors import ConfigurationError


def asyncpg_dsn(url: str) -> str:
    """Return a DSN asyncpg accepts, from any SQLAlchemy-style Postgres URL."""
    if not url:
        raise ConfigurationError("TIDINGS_DATABASE_URL is not set")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ConfigurationError(
            f"TIDINGS_DATABASE_URL {scheme!r} is not a postgresql:// URL"
        )
    return f"postgresql://{rest}"


def sqlalchemy_url(url: str) -> str:
    """Return a SQLAlchemy URL that uses the psycopg-free asyncpg dialect."""
    return "postgresql+asyncpg://" + asyncpg_dsn(url).partition("://")[2]


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 5
) -> asyncpg.Pool:
    """Open a small asyncpg pool."""
    return await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=min_size, max_size=max_size
    )
