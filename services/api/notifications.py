"""A user's own notifications: list, read, unread status, mark seen or deleted.

Every route acts on the caller's rows only, and another user's notification
gets a 404 as if it did not exist. Writes touch Postgres only: the triggers and the
bridge tell the user's other tabs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
from litestar import delete, get, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody, Parameter

from tidings.api import store
from tidings.api.auth import ApiCaller, require_user
from tidings.api.schemas import (
    NotificationsBatchRequest,
    NotificationsBatchUpdateResponse,
    NotificationStatusSummary,
    UserNotificationResponse,
    UserNotificationsBatchUpdateRequest,
    UserNotificationUpdateRequest,
)
from tidings.api.validation import (
    NotificationIdPath,
    invalid,
    parse_notification_id,
    to_utc,
)

TAGS = ["notifications"]
Limit = Annotated[int, Parameter(ge=1, le=1000, description="Page size")]
Offset = Annotated[
    int, Parameter(ge=0, le=2**31 - 1, description="Notifications to skip")
]


@get("/api/notifications", tags=TAGS)
async def list_notifications(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    limit: Limit = 20,
    offset: Offset = 0,
) -> list[UserNotificationResponse]:
    """List the caller's published, unexpired, undeleted notifications, newest first."""
    user_id = require_user(caller)
    return await store.list_user_notifications(db_pool, user_id, limit, offset)


@get("/api/notifications/status", tags=TAGS)
async def notification_status(
    optional_caller: NamedDependency[ApiCaller | None],
    db_pool: NamedDependency[asyncpg.Pool],
    since: Annotated[
        datetime, Parameter(description="Report what changed since this time (UTC)")
    ],
) -> NotificationStatusSummary:
    """Return the unread count and what changed since `since`.

    What changed are the caller's notifications and the broadcasts published
    or updated since then. Without an API key, only broadcasts are returned.
    """
    since_utc = to_utc(since, "since")
    assert since_utc is not None
    broadcasts = await store.list_broadcasts(db_pool, active_only=True, since=since_utc)
    if optional_caller is None or optional_caller.user_id is None:
        return NotificationStatusSummary(0, [], broadcasts)
    user_id = optional_caller.user_id
    async with db_pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        unread = await store.count_unread(conn, user_id)
        changed = await store.user_notifications_since(conn, user_id, since_utc)
    return NotificationStatusSummary(unread, changed, broadcasts)


@get("/api/notifications/{notification_id:str}", tags=TAGS)
async def show_notification(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    notification_id: NotificationIdPath,
) -> UserNotificationResponse:
    """Return one of the caller's published, unexpired, undeleted notifications."""
    user_id = require_user(caller)
    row_id = parse_notification_id(notification_id)
    found = await store.get_user_notification(db_pool, user_id, row_id)
    if found is None:
        raise _not_found(row_id)
    return found


@put("/api/notifications/{notification_id:str}", status_code=204, tags=TAGS)
async def update_notification(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    notification_id: NotificationIdPath,
    data: JSONBody[UserNotificationUpdateRequest],
) -> None:
    """Mark one of the caller's notifications seen or unseen, deleted or not."""
    user_id = require_user(caller)
    row_id = parse_notification_id(notification_id)
    _require_changes(data, "")
    updated = await store.update_user_notifications(
        db_pool, user_id, [row_id], data.seen, data.deleted
    )
    if not updated:
        raise _not_found(row_id)


@delete("/api/notifications/{notification_id:str}", tags=TAGS)
async def delete_notification(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    notification_id: NotificationIdPath,
) -> None:
    """Mark one of the caller's notifications deleted; the row stays until expiry."""
    user_id = require_user(caller)
    row_id = parse_notification_id(notification_id)
    updated = await store.update_user_notifications(
        db_pool, user_id, [row_id], None, True
    )
    if not updated:
        raise _not_found(row_id)


@put("/api/notifications", tags=TAGS)
async def update_notifications(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    data: JSONBody[UserNotificationsBatchUpdateRequest],
) -> NotificationsBatchUpdateResponse:
    """Apply the same changes to many of the caller's notifications at once.

    Ids that are not the caller's are skipped, and `updated_count` is the
    number of notifications changed.
    """
    user_id = require_user(caller)
    _require_changes(data.changes, "changes.")
    updated = await store.update_user_notifications(
        db_pool,
        user_id,
        sorted(set(data.notification_ids)),
        data.changes.seen,
        data.changes.deleted,
    )
    return NotificationsBatchUpdateResponse(updated)


@delete("/api/notifications", status_code=200, tags=TAGS)
async def delete_notifications(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    data: JSONBody[NotificationsBatchRequest],
) -> NotificationsBatchUpdateResponse:
    """Mark many of the caller's notifications deleted; others' ids are skipped."""
    user_id = require_user(caller)
    updated = await store.update_user_notifications(
        db_pool, user_id, sorted(set(data.notification_ids)), None, True
    )
    return NotificationsBatchUpdateResponse(updated)


def _require_changes(changes: UserNotificationUpdateRequest, prefix: str) -> None:
    if changes.seen is None and changes.deleted is None:
        raise invalid(f"{prefix}seen", f"set {prefix}seen or {prefix}deleted")


def _not_found(notification_id: int) -> NotFoundException:
    return NotFoundException(f"notification {notification_id} not found")


USER_ROUTES = [
    list_notifications,
    notification_status,
    show_notification,
    update_notification,
    delete_notification,
    update_notifications,
    delete_notifications,
]
