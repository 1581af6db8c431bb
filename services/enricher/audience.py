"""Who must hear a change: one resolver per kind of change.

Adding a watched kind means a trigger and one entry in `RESOLVERS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec

from tidings.shared.events import Change, HistoryUpdate, NotificationUpdate
from tidings.shared.subjects import ALL_AUDIENCE, session_audience, user_audience


class Delivery(msgspec.Struct, frozen=True):
    """An event to publish to some audiences."""

    event_type: str
    data: msgspec.Struct
    audiences: list[str]


Resolver = Callable[[asyncpg.Pool, Change], Awaitable[Delivery | None]]

_HISTORY_OWNER = "SELECT user_id FROM history WHERE id = $1"
_HISTORY_SESSIONS = """
SELECT DISTINCT s.session_key
FROM galaxy_session_to_history AS sh
JOIN galaxy_session AS s ON s.id = sh.session_id
WHERE sh.history_id = $1 AND s.session_key IS NOT NULL AND s.user_id IS NULL
"""
_NOTIFICATION = """
SELECT category, publication_time, expiration_time FROM notification WHERE id = $1
"""
_NOTIFICATION_RECIPIENTS = """
SELECT DISTINCT user_id FROM user_notification_association
WHERE notification_id = $1 AND user_id IS NOT NULL
"""


async def resolve_history(pool: asyncpg.Pool, change: Change) -> Delivery | None:
    """A history is heard by its owner, or by the anonymous sessions using it."""
    history_id = int(change.key)
    async with pool.acquire() as conn:
        owner = await conn.fetchval(_HISTORY_OWNER, history_id)
        if owner is not None:
            audiences = [user_audience(owner)]
        else:
            keys = await conn.fetch(_HISTORY_SESSIONS, history_id)
            audiences = [session_audience(row["session_key"]) for row in keys]
    data = HistoryUpdate(history_ids=[change.key], update_time=change.commit_time)
    return Delivery("history_update", data, audiences)


async def resolve_notification(pool: asyncpg.Pool, change: Change) -> Delivery | None:
    """A notification is heard by its recipients once it is published.

    Broadcasts go to everyone. A notification whose publication time lies in
    the future, or that has expired, is heard by no one.
    """
    notification_id = int(change.key)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_NOTIFICATION, notification_id)
        if row is None:
            return None
        now = datetime.now(UTC).replace(tzinfo=None)
        if row["publication_time"] > now:
            # TODO: scheduled notifications are published by no one yet; the
            # bridge must emit a change when their publication time comes.
            return None
        if row["expiration_time"] is not None and row["expiration_time"] <= now:
            return None
        if row["category"] == "broadcast":
            audiences = [ALL_AUDIENCE]
            event_type = "broadcast_update"
        else:
            users = await conn.fetch(_NOTIFICATION_RECIPIENTS, notification_id)
            audiences = [user_audience(r["user_id"]) for r in users]
            event_type = "notification_update"
    data = NotificationUpdate(
        notification_ids=[change.key], update_time=change.commit_time
    )
    return Delivery(event_type, data, audiences)


RESOLVERS: dict[str, Resolver] = {
    "history": resolve_history,
    "notification": resolve_notification,
}
