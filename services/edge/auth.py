"""Authenticating stream requests by API key, with a short-lived cache."""

from __future__ import annotations

import time

import asyncpg
import msgspec

_USER_BY_API_KEY = """
SELECT u.id, u.email
FROM api_keys AS k JOIN galaxy_user AS u ON u.id = k.user_id
WHERE k.key = $1 AND NOT k.deleted AND NOT u.deleted
"""

_MAX_KEY_LENGTH = 255


class Caller(msgspec.Struct, frozen=True):
    """An authenticated user."""

    user_id: int
    email: str


class ApiKeyAuthenticator:
    """Looks API keys up in Postgres and caches the answer for `ttl` seconds.

    Misses are cached too, so a client retrying a wrong key does not reach the
    database on every attempt.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float):
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def authenticate(self, key: str) -> Caller | None:
        """Return the caller owning `key`, or None when the key is not valid."""
        if not key or len(key) > _MAX_KEY_LENGTH:
            return None
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self._pool.fetchrow(_USER_BY_API_KEY, key)
        caller = None if row is None else Caller(row["id"], row["email"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, caller)
        return caller
