"""Demo routes, served only with `TIDINGS_DEMO=1` (as `tidings up` does).

They list the demo users with their API keys and let the page change a
history, so a newcomer sees a change travel through the whole system. Never
enable them in production: they hand out API keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import asyncpg
from litestar import MediaType, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.params import PathParameter
from litestar.response import File

from tidings.edge.status import read_status
from tidings.shared.events import NotificationStatus
from tidings.shared.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"

_DEMO_USERS = """
SELECT u.id, u.email, min(k.key) AS api_key,
       coalesce(json_agg(json_build_object('id', h.id, 'name', h.name)
                ORDER BY h.id) FILTER (WHERE h.id IS NOT NULL), '[]') AS histories
FROM galaxy_user AS u
JOIN api_keys AS k ON k.user_id = u.id AND NOT k.deleted
LEFT JOIN history AS h ON h.user_id = u.id
GROUP BY u.id, u.email
ORDER BY u.id
"""

_TOUCH_HISTORY = """
UPDATE history SET update_time = now() AT TIME ZONE 'UTC'
WHERE id = $1 AND user_id = (
    SELECT user_id FROM api_keys WHERE key = $2 AND NOT deleted
)
"""


_USER_BY_KEY = """
SELECT k.user_id FROM api_keys AS k JOIN galaxy_user AS u ON u.id = k.user_id
WHERE k.key = $1 AND NOT k.deleted AND NOT u.deleted
"""


@get("/demo", media_type=MediaType.HTML)
async def demo_page() -> File:
    """Serve the demo page."""
    return File(STATIC_DIR / "demo.html", content_disposition_type="inline")


@get("/demo/users", media_type=MediaType.JSON)
async def demo_users(
    request: Request,
    db_pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
) -> list[dict]:
    """Demo users with one API key each and their histories."""
    import json

    # A page on another site could reach this route through DNS rebinding;
    # checking the Host header keeps the keys to pages of this machine.
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname
    if host not in {"127.0.0.1", "localhost", "::1", settings.host}:
        raise PermissionDeniedException(
            f"demo users are served only to {settings.host} or localhost, "
            f"not to host {host!r}"
        )
    rows = await db_pool.fetch(_DEMO_USERS)
    return [
        {
            "id": row["id"],
            "email": row["email"],
            "api_key": row["api_key"],
            "is_admin": row["email"] in settings.admin_emails,
            "histories": json.loads(row["histories"]),
        }
        for row in rows
    ]


@get("/demo/config", media_type=MediaType.JSON)
async def demo_config(settings: NamedDependency[Settings]) -> dict[str, str]:
    """Return the URL of the notification API (`TIDINGS_API_PUBLIC_URL`)."""
    return {"api_url": settings.api_public_url.rstrip("/")}


@get("/demo/status", media_type=MediaType.JSON)
async def demo_status(
    request: Request, db_pool: NamedDependency[asyncpg.Pool]
) -> NotificationStatus:
    """Return the notification status of the `x-api-key` owner, for the bell."""
    key = request.headers.get("x-api-key", "")
    user_id = await db_pool.fetchval(_USER_BY_KEY, key) if key else None
    if user_id is None:
        raise NotAuthorizedException("missing or invalid x-api-key header")
    return await read_status(db_pool, user_id)


@post("/demo/histories/{history_id:int}/touch", status_code=204)
async def touch_history(
    request: Request,
    history_id: Annotated[int, PathParameter(ge=1, le=2**31 - 1)],
    db_pool: NamedDependency[asyncpg.Pool],
) -> None:
    """Bump a history's update time, as Galaxy does when a dataset changes."""
    key = request.headers.get("x-api-key", "")
    if not key:
        raise NotAuthorizedException("missing x-api-key header")
    result = await db_pool.execute(_TOUCH_HISTORY, history_id, key)
    if result == "UPDATE 0":
        raise NotFoundException(f"history {history_id} not found for this API key")


DEMO_HANDLERS = [demo_page, demo_users, demo_config, demo_status, touch_history]
