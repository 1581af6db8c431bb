"""Broadcasts: notifications for everyone, including anonymous visitors.

Anyone may read the active broadcasts; admins also see scheduled and
expired ones, and only admins create or change them.
"""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody

from tidings.api import store
from tidings.api.auth import ApiCaller, require_admin
from tidings.api.schemas import (
    BroadcastNotificationCreateRequest,
    NotificationBroadcastUpdateRequest,
    NotificationCreatedResponse,
    NotificationResponse,
)
from tidings.api.validation import (
    NotificationIdPath,
    check_window,
    invalid,
    parse_notification_id,
    publication_window,
    to_utc,
)
from tidings.shared.logs import get_logger

log = get_logger(__name__)

TAGS = ["broadcasts"]


@get("/api/notifications/broadcast", tags=TAGS)
async def list_broadcasts(
    optional_caller: NamedDependency[ApiCaller | None],
    db_pool: NamedDependency[asyncpg.Pool],
) -> list[NotificationResponse]:
    """List the active broadcasts, newest first; admins also get inactive ones."""
    return await store.list_broadcasts(
        db_pool, active_only=not _is_admin(optional_caller)
    )


@get("/api/notifications/broadcast/{notification_id:str}", tags=TAGS)
async def show_broadcast(
    optional_caller: NamedDependency[ApiCaller | None],
    db_pool: NamedDependency[asyncpg.Pool],
    notification_id: NotificationIdPath,
) -> NotificationResponse:
    """Return one active broadcast; admins may also read inactive ones."""
    row_id = parse_notification_id(notification_id)
    active_only = not _is_admin(optional_caller)
    row = await store.get_broadcast(db_pool, row_id, active_only=active_only)
    if row is None:
        raise _not_found(row_id)
    return store.notification_response(row)


@post("/api/notifications/broadcast", status_code=200, tags=TAGS)
async def create_broadcast(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    data: JSONBody[BroadcastNotificationCreateRequest],
) -> NotificationCreatedResponse:
    """Broadcast a notification to everyone (admins only).

    It is published now or at `publication_time`, and expires six months
    later unless `expiration_time` is given.
    """
    require_admin(caller)
    publication, expiration = publication_window(
        data.publication_time, data.expiration_time, ""
    )
    async with db_pool.acquire() as conn:
        row = await store.insert_notification(
            conn,
            source=data.source,
            category="broadcast",
            variant=data.variant,
            content=data.content,
            publication_time=publication,
            expiration_time=expiration,
            galaxy_url=None,
        )
    log.info("broadcast created", notification_id=row["id"])
    return NotificationCreatedResponse(
        total_notifications_sent=1, notification=store.notification_response(row)
    )


@put("/api/notifications/broadcast/{notification_id:str}", status_code=204, tags=TAGS)
async def update_broadcast(
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
    notification_id: NotificationIdPath,
    data: JSONBody[NotificationBroadcastUpdateRequest],
) -> None:
    """Edit, reschedule or expire a broadcast (admins only)."""
    require_admin(caller)
    row_id = parse_notification_id(notification_id)
    if all(value is None for value in msgspec.structs.astuple(data)):
        raise invalid("source", "set at least one field to change")
    publication = to_utc(data.publication_time, "publication_time")
    expiration = to_utc(data.expiration_time, "expiration_time")

    async with db_pool.acquire() as conn, conn.transaction():
        row = await store.get_broadcast(
            conn, row_id, active_only=False, for_update=True
        )
        if row is None:
            raise _not_found(row_id)
        publication = publication or row["publication_time"]
        expiration = expiration or row["expiration_time"]
        check_window(publication, expiration, "")
        content = row["content"]
        if data.content is not None:
            content = msgspec.json.encode(data.content).decode()
        await store.update_broadcast(
            conn,
            row_id,
            source=data.source or row["source"],
            variant=data.variant or row["variant"],
            publication_time=publication,
            expiration_time=expiration,
            content=content,
        )
    log.info("broadcast updated", notification_id=row_id)


def _is_admin(caller: ApiCaller | None) -> bool:
    return caller is not None and caller.is_admin


def _not_found(notification_id: int) -> NotFoundException:
    return NotFoundException(f"broadcast {notification_id} not found")


BROADCAST_ROUTES = [list_broadcasts, show_broadcast, create_broadcast, update_broadcast]
