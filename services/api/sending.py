"""`POST /api/notifications`: an admin notifies users, groups and roles."""

from __future__ import annotations

import asyncpg
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from tidings.api.auth import ApiCaller, require_admin
from tidings.api.recipients import expand_recipients
from tidings.api.schemas import NotificationCreatedResponse, NotificationCreateRequest
from tidings.api.store import (
    insert_associations,
    insert_notification,
    notification_response,
)
from tidings.api.validation import invalid, publication_window
from tidings.shared.logs import get_logger

log = get_logger(__name__)


@post("/api/notifications", status_code=200, tags=["notifications"])
async def send_notification(
    request: Request,
    data: JSONBody[NotificationCreateRequest],
    caller: NamedDependency[ApiCaller],
    db_pool: NamedDependency[asyncpg.Pool],
) -> NotificationCreatedResponse:
    """Send a notification to users, and to the users of groups and roles (admins only).

    Each user receives it once, however many of the groups and roles name
    them. Nothing is stored unless every recipient is known.
    """
    require_admin(caller)
    notification = data.notification
    content_category = type(notification.content).__struct_config__.tag
    if content_category != notification.category:
        raise invalid(
            "notification.content.category",
            f"{content_category!r} does not match "
            f"notification.category {notification.category!r}",
        )
    publication, expiration = publication_window(
        notification.publication_time, notification.expiration_time, "notification."
    )

    async with db_pool.acquire() as conn, conn.transaction():
        user_ids = await expand_recipients(conn, data.recipients)
        row = await insert_notification(
            conn,
            source=notification.source,
            category=notification.category,
            variant=notification.variant,
            content=notification.content,
            publication_time=publication,
            expiration_time=expiration,
            # The Host header is the client's to choose, so it is not stored.
            galaxy_url=None,
        )
        await insert_associations(conn, row["id"], sorted(user_ids))
    log.info(
        "notification sent",
        notification_id=row["id"],
        category=notification.category,
        recipients=len(user_ids),
    )
    return NotificationCreatedResponse(
        total_notifications_sent=len(user_ids),
        notification=notification_response(row),
    )
