"""Resolving the API caller from an API key, and the admin check."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import Request
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
    request: Request, db_pool: asyncpg.Pool, settings: Settings
) -> ApiCaller:
    """Return the caller named by `x-api-key` or `key=`, or raise 401."""
    key = request.headers.get("x-api-key") or request.query_params.get("key") or ""
    if not key:
        raise NotAuthorizedException("missing API key: send an x-api-key header")
    if settings.admin_api_key and key == settings.admin_api_key:
        return ApiCaller(user_id=None, email=None, is_admin=True)
    row = await db_pool.fetchrow(_USER_BY_API_KEY, key[:255])
    if row is None:
        raise NotAuthorizedException("invalid API key")
    is_admin = row["email"] in settings.admin_emails
    return ApiCaller(user_id=row["id"], email=row["email"], is_admin=is_admin)


def require_admin(caller: ApiCaller) -> None:
    """Raise 403 unless the caller is an admin."""
    if not caller.is_admin:
        raise PermissionDeniedException("this route requires an admin API key")
