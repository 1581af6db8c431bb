"""Who is calling: a stream token, an API key or a Galaxy session cookie.

The first credential present decides, in that order, and a credential that
is present but not valid is an error: the edge never falls back to a weaker
one. Database lookups are cached for a few seconds, misses too, so a client
retrying a wrong key does not reach the database on every attempt.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import asyncpg
import msgspec

from tidings.edge.galaxy_cookie import SessionCookieDecoder
from tidings.edge.tokens import TokenError, TokenSigner
from tidings.shared.errors import TidingsError
from tidings.shared.subjects import ALL_AUDIENCE, session_audience, user_audience

_USER_BY_API_KEY = """
SELECT u.id
FROM api_keys AS k JOIN galaxy_user AS u ON u.id = k.user_id
WHERE k.key = $1 AND NOT k.deleted AND NOT u.deleted
"""

_USER_BY_SESSION_KEY = """
SELECT s.user_id
FROM galaxy_session AS s LEFT JOIN galaxy_user AS u ON u.id = s.user_id
WHERE s.session_key = $1 AND s.is_valid AND (s.user_id IS NULL OR NOT u.deleted)
"""

_MAX_KEY_LENGTH = 255
_MAX_CACHE_ENTRIES = 10_000


class AuthError(TidingsError):
    """Credentials that are missing or not valid; `reason` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Caller(msgspec.Struct, frozen=True):
    """An authenticated stream caller: a user, or an anonymous Galaxy session."""

    audience: str
    user_id: int | None = None

    @property
    def audiences(self) -> tuple[str, str]:
        """Every audience this caller hears: its own and everyone's."""
        return (self.audience, ALL_AUDIENCE)


class Credentials(NamedTuple):
    """The credentials a request carries; empty strings for those it lacks."""

    token: str = ""
    api_key: str = ""
    session_cookie: str = ""


class _TtlCache:
    def __init__(self, ttl: float):
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Caller | None]] = {}

    def get(self, key: str) -> tuple[bool, Caller | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: str, caller: Caller | None) -> None:
        if len(self._entries) >= _MAX_CACHE_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._ttl, caller)


class Authenticator:
    """Resolves the caller of a stream or token request."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: TokenSigner,
        cookies: SessionCookieDecoder,
        *,
        api_key_ttl: float,
        session_ttl: float,
    ):
        self._pool = pool
        self.signer = signer
        self._cookies = cookies
        self._api_keys = _TtlCache(api_key_ttl)
        self._sessions = _TtlCache(session_ttl)

    async def authenticate(
        self, credentials: Credentials, *, allow_token: bool = True
    ) -> Caller:
        """Return the caller the credentials name; raise `AuthError` otherwise."""
        if credentials.token and allow_token:
            return self._from_token(credentials.token)
        if credentials.api_key:
            return await self._from_api_key(credentials.api_key)
        if credentials.session_cookie:
            return await self._from_cookie(credentials.session_cookie)
        accepted = "an API key (x-api-key header or key=) or the galaxysession cookie"
        if allow_token:
            accepted = "a stream token (token= or Authorization: Bearer), " + accepted
        raise AuthError("credentials_missing", f"missing credentials: send {accepted}")

    def _from_token(self, token: str) -> Caller:
        try:
            claims = self.signer.verify(token)
        except TokenError as exc:
            raise AuthError(exc.reason, str(exc)) from None
        return Caller(audience=claims.sub, user_id=claims.uid)

    async def _from_api_key(self, key: str) -> Caller:
        if len(key) > _MAX_KEY_LENGTH or not key.isprintable():
            raise AuthError("api_key_invalid", "invalid API key")
        found, caller = self._api_keys.get(key)
        if not found:
            user_id = await self._pool.fetchval(_USER_BY_API_KEY, key)
            caller = None if user_id is None else _user(user_id)
            self._api_keys.put(key, caller)
        if caller is None:
            raise AuthError("api_key_invalid", "invalid API key")
        return caller

    async def _from_cookie(self, cookie: str) -> Caller:
        found, caller = self._sessions.get(cookie)
        if not found:
            caller = await self._lookup_session(cookie)
            self._sessions.put(cookie, caller)
        if caller is None:
            raise AuthError(
                "session_invalid",
                "the galaxysession cookie names no valid session; log in again",
            )
        return caller

    async def _lookup_session(self, cookie: str) -> Caller | None:
        session_key = self._cookies.decode(cookie)
        too_long = session_key is not None and len(session_key) > _MAX_KEY_LENGTH
        if session_key is None or too_long or not session_key.isprintable():
            return None
        row = await self._pool.fetchrow(_USER_BY_SESSION_KEY, session_key)
        if row is None:
            return None
        if row["user_id"] is None:
            return Caller(audience=session_audience(session_key))
        return _user(row["user_id"])


def _user(user_id: int) -> Caller:
    return Caller(audience=user_audience(user_id), user_id=user_id)
