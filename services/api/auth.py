"""Resolving the API caller from an API key, and the admin check."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from tidings.shared.settings import Settings

_USER_BY_API_KEY = """
SELECT u.id, u.email
FROM api_keys AS k JOIN galaxy_user AS u ON u.id = k.user_id
WHERE k.key = $1 AND NOT k.deleted AND NOT u.deleted
"""


class ApiCaller(msgspec.Struct, frozen=True):
    """The caller of an API request; `user_id` is None for the bootstrap admin key."""

    user_id: int | None
    email: str | None
    is_admin: bool


async def resolve_caller(
    request: Request,
    db_pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
) -> ApiCaller:
    """Return the caller named by `x-api-key` or `key=`, or raise 401."""
    caller = await resolve_optional_caller(request, db_pool, settings)
    if caller is None:
        raise NotAuthorizedException("missing API key: send an x-api-key header")
    return caller


async def resolve_optional_caller(
    request: Request,
    db_pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
) -> ApiCaller | None:
    """Return the caller named by an API key, None without one; a wrong key is 401."""
    key = request.headers.get("x-api-key") or request.query_params.get("key") or ""
    if not key:
        return None
    if settings.admin_api_key and key == settings.admin_api_key:
        return ApiCaller(user_id=None, email=None, is_admin=True)
    if len(key) > 255 or not key.isprintable():
        raise NotAuthorizedException("invalid API key")
    row = await db_pool.fetchrow(_USER_BY_API_KEY, key)
    if row is None:
        raise NotAuthorizedException("invalid API key")
    is_admin = row["email"] in settings.admin_emails
    return ApiCaller(user_id=row["id"], email=row["email"], is_admin=is_admin)


def require_admin(caller: ApiCaller) -> None:
    """Raise 403 unless the caller is an admin."""
    if not caller.is_admin:
        raise PermissionDeniedException("this route requires an admin API key")


def require_user(caller: ApiCaller) -> int:
    """Return the caller's user id; the bootstrap admin key has none, so 403."""
    if caller.user_id is None:
        raise PermissionDeniedException(
            "this route acts on a user's own notifications; "
            "call it with that user's API key"
        )
    return caller.user_id
