"""The `notification_status` summary sent on a fresh connect, read from Postgres.

A notification is active while `publication_time <= now < expiration_time`
(no expiration means it never expires). The unread count covers the user's
active notifications that are neither seen nor deleted; broadcasts are the
active notifications of category `broadcast`, which have no per-user rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import msgspec

from tidings.shared.events import BroadcastSummary, NotificationStatus

_ACTIVE = """
n.publication_time <= (now() AT TIME ZONE 'UTC')
AND (n.expiration_time IS NULL OR n.expiration_time > (now() AT TIME ZONE 'UTC'))
"""

_UNREAD_COUNT = f"""
SELECT count(*)
FROM user_notification_association AS una
JOIN notification AS n ON n.id = una.notification_id
WHERE una.user_id = $1 AND NOT una.deleted AND una.seen_time IS NULL
  AND n.category <> 'broadcast' AND {_ACTIVE}
"""

_ACTIVE_BROADCASTS = f"""
SELECT n.id, n.source, n.variant, n.create_time, n.update_time,
       n.publication_time, n.expiration_time, n.content
FROM notification AS n
WHERE n.category = 'broadcast' AND {_ACTIVE}
ORDER BY n.publication_time DESC, n.id DESC
"""


async def read_status(pool: asyncpg.Pool, user_id: int | None) -> NotificationStatus:
    """Read the unread count of `user_id` (0 for anonymous) and active broadcasts."""
    async with pool.acquire() as conn:
        unread = 0
        if user_id is not None:
            unread = await conn.fetchval(_UNREAD_COUNT, user_id)
        rows = await conn.fetch(_ACTIVE_BROADCASTS)
    return NotificationStatus(
        total_unread_count=unread, broadcasts=[_broadcast(row) for row in rows]
    )


def _broadcast(row: asyncpg.Record) -> BroadcastSummary:
    return BroadcastSummary(
        id=str(row["id"]),
        source=row["source"],
        variant=row["variant"],
        create_time=_utc(row["create_time"]),
        update_time=_utc(row["update_time"]),
        publication_time=_utc(row["publication_time"]),
        expiration_time=_utc(row["expiration_time"]),
        content=_content(row["content"]),
    )


def _utc(value: datetime | None) -> datetime | None:
    # Columns hold naive UTC, as Galaxy's do; the wire carries explicit UTC.
    return None if value is None else value.replace(tzinfo=UTC)


def _content(text: str | None) -> dict:
    # Content is JSON text written by the API; anything else shows as empty.
    if not text:
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
