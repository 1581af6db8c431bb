"""Demo routes, served only with `TIDINGS_DEMO=1` (as `tidings up` does).

They list the demo users with their API keys and let the page change a
history, so a newcomer sees a change travel through the whole system. Never
enable them in production: they hand out API keys.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from litestar import MediaType, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.params import FromPath
from litestar.response import File

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


@get("/demo", media_type=MediaType.HTML)
async def demo_page() -> File:
    """Serve the demo page."""
    return File(STATIC_DIR / "demo.html", content_disposition_type="inline")


@get("/demo/users", media_type=MediaType.JSON)
async def demo_users(db_pool: NamedDependency[asyncpg.Pool]) -> list[dict]:
    """Demo users with one API key each and their histories."""
    import json

    rows = await db_pool.fetch(_DEMO_USERS)
    return [
        {
            "id": row["id"],
            "email": row["email"],
            "api_key": row["api_key"],
            "histories": json.loads(row["histories"]),
        }
        for row in rows
    ]


@post("/demo/histories/{history_id:int}/touch", status_code=204)
async def touch_history(
    request: Request,
    history_id: FromPath[int],
    db_pool: NamedDependency[asyncpg.Pool],
) -> None:
    """Bump a history's update time, as Galaxy does when a dataset changes."""
    key = request.headers.get("x-api-key", "")
    if not key:
        raise NotAuthorizedException("missing x-api-key header")
    result = await db_pool.execute(_TOUCH_HISTORY, history_id, key)
    if result == "UPDATE 0":
        raise NotFoundException(f"history {history_id} not found for this API key")


DEMO_HANDLERS = [demo_page, demo_users, touch_history]
