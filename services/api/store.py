"""Reading and writing notification rows in Postgres.

Times are `timestamp without time zone` holding UTC, as in Galaxy. A
notification is active from its publication time until its expiration time
(never, when that is NULL); users only see active ones, by Postgres' clock.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from tidings.api.schemas import NotificationResponse, UserNotificationResponse

_NOW = "(now() AT TIME ZONE 'UTC')"
_ACTIVE = (
    f"n.publication_time <= {_NOW}"
    f" AND (n.expiration_time IS NULL OR n.expiration_time > {_NOW})"
)
_NEWEST_FIRST = "ORDER BY n.publication_time DESC, n.id DESC"

_USER_NOTIFICATIONS = f"""
SELECT n.id, n.source, n.category, n.variant, n.create_time, una.update_time,
    n.publication_time, n.expiration_time, n.content, una.seen_time, una.deleted
FROM user_notification_association AS una
JOIN notification AS n ON n.id = una.notification_id
WHERE una.user_id = $1 AND NOT una.deleted AND {_ACTIVE}
"""
_UNREAD_COUNT = f"""
SELECT count(*)
FROM user_notification_association AS una
JOIN notification AS n ON n.id = una.notification_id
WHERE una.user_id = $1 AND NOT una.deleted AND una.seen_time IS NULL AND {_ACTIVE}
"""
_UPDATE_USER_NOTIFICATIONS = f"""
UPDATE user_notification_association
SET seen_time = CASE WHEN $3::boolean IS NULL THEN seen_time
                     WHEN $3 THEN {_NOW} END,
    deleted = COALESCE($4::boolean, deleted),
    update_time = {_NOW}
WHERE user_id = $1 AND notification_id = ANY($2::integer[])
"""

_BROADCASTS = """
SELECT n.id, n.source, n.category, n.variant, n.create_time, n.update_time,
    n.publication_time, n.expiration_time, n.content
FROM notification AS n
WHERE n.category = 'broadcast'
"""

INSERT_NOTIFICATION = """
INSERT INTO notification
    (source, category, variant, content, publication_time, expiration_time, galaxy_url)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *
"""
_INSERT_ASSOCIATIONS = """
INSERT INTO user_notification_association (user_id, notification_id)
SELECT unnest($1::integer[]), $2
"""
_UPDATE_BROADCAST = f"""
UPDATE notification
SET source = $2, variant = $3, publication_time = $4, expiration_time = $5,
    content = $6, update_time = {_NOW}
WHERE id = $1
"""


async def list_user_notifications(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, limit: int, offset: int
) -> list[UserNotificationResponse]:
    """Return the user's active, undeleted notifications, newest first."""
    sql = f"{_USER_NOTIFICATIONS} {_NEWEST_FIRST} LIMIT $2 OFFSET $3"
    rows = await conn.fetch(sql, user_id, limit, offset)
    return [user_notification_response(r) for r in rows]


async def get_user_notification(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, notification_id: int
) -> UserNotificationResponse | None:
    """Return one of the user's active, undeleted notifications, or None."""
    row = await conn.fetchrow(
        f"{_USER_NOTIFICATIONS} AND n.id = $2", user_id, notification_id
    )
    return None if row is None else user_notification_response(row)


async def user_notifications_since(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, since: datetime
) -> list[UserNotificationResponse]:
    """Return the user's active notifications published or changed since then."""
    sql = (
        f"{_USER_NOTIFICATIONS}"
        " AND (una.update_time >= $2 OR n.publication_time >= $2)"
        f" {_NEWEST_FIRST}"
    )
    rows = await conn.fetch(sql, user_id, since)
    return [user_notification_response(r) for r in rows]


async def count_unread(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> int:
    """Count the user's active, undeleted notifications not seen yet."""
    return await conn.fetchval(_UNREAD_COUNT, user_id)


async def update_user_notifications(
    conn: asyncpg.Connection | asyncpg.Pool,
    user_id: int,
    notification_ids: list[int],
    seen: bool | None,
    deleted: bool | None,
) -> int:
    """Apply the changes to the user's own rows among `notification_ids`.

    Returns how many rows changed; other users' rows are never touched.
    """
    status = await conn.execute(
        _UPDATE_USER_NOTIFICATIONS, user_id, notification_ids, seen, deleted
    )
    return int(status.rsplit(" ", 1)[1])


async def list_broadcasts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    active_only: bool,
    since: datetime | None = None,
) -> list[NotificationResponse]:
    """Broadcasts, newest first; with `since`, only those published or changed since."""
    sql = _BROADCASTS
    args: list[object] = []
    if active_only:
        sql += f" AND {_ACTIVE}"
    if since is not None:
        args.append(since)
        sql += " AND (n.update_time >= $1 OR n.publication_time >= $1)"
    rows = await conn.fetch(f"{sql} {_NEWEST_FIRST}", *args)
    return [notification_response(r) for r in rows]


async def get_broadcast(
    conn: asyncpg.Connection | asyncpg.Pool,
    notification_id: int,
    *,
    active_only: bool,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """Return the broadcast row with this id, or None."""
    sql = f"{_BROADCASTS} AND n.id = $1"
    if active_only:
        sql += f" AND {_ACTIVE}"
    if for_update:
        sql += " FOR UPDATE"
    return await conn.fetchrow(sql, notification_id)


async def insert_notification(
    conn: asyncpg.Connection,
    *,
    source: str,
    category: str,
    variant: str,
    content: msgspec.Struct,
    publication_time: datetime,
    expiration_time: datetime,
    galaxy_url: str | None,
) -> asyncpg.Record:
    """Insert a notification row and return it."""
    return await conn.fetchrow(
        INSERT_NOTIFICATION,
        source,
        category,
        variant,
        msgspec.json.encode(content).decode(),
        publication_time,
        expiration_time,
        galaxy_url,
    )


async def insert_associations(
    conn: asyncpg.Connection, notification_id: int, user_ids: list[int]
) -> None:
    """Give each user one association with the notification."""
    await conn.execute(_INSERT_ASSOCIATIONS, user_ids, notification_id)


async def update_broadcast(
    conn: asyncpg.Connection,
    notification_id: int,
    *,
    source: str,
    variant: str,
    publication_time: datetime,
    expiration_time: datetime | None,
    content: str,
) -> None:
    """Overwrite a broadcast's fields; `content` is stored JSON."""
    await conn.execute(
        _UPDATE_BROADCAST,
        notification_id,
        source,
        variant,
        publication_time,
        expiration_time,
        content,
    )


def _notification_fields(row: asyncpg.Record) -> dict:
    return {
        "id": str(row["id"]),
        "source": row["source"],
        "category": row["category"],
        "variant": row["variant"],
        "create_time": row["create_time"],
        "update_time": row["update_time"],
        "publication_time": row["publication_time"],
        "expiration_time": row["expiration_time"],
        "content": msgspec.json.decode(row["content"]),
    }


def notification_response(row: asyncpg.Record) -> NotificationResponse:
    """Convert a notification row to its API shape."""
    return NotificationResponse(**_notification_fields(row))


def user_notification_response(row: asyncpg.Record) -> UserNotificationResponse:
    """Convert a notification row with one recipient's columns to its API shape."""
    return UserNotificationResponse(
        **_notification_fields(row),
        seen_time=row["seen_time"],
        deleted=row["deleted"],
    )
