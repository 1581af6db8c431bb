"""Notification routes. They write Postgres only; triggers carry every change onward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import JSONBody

from tidings.api.auth import require_admin, resolve_caller
from tidings.api.schemas import (
    NotificationCreatedResponse,
    NotificationCreateRequest,
    NotificationResponse,
)
from tidings.shared.settings import Settings

DEFAULT_LIFETIME = timedelta(days=183)

_INSERT_NOTIFICATION = """
INSERT INTO notification
    (source, category, variant, content, publication_time, expiration_time, galaxy_url)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *
"""
_INSERT_ASSOCIATIONS = """
INSERT INTO user_notification_association (user_id, notification_id)
SELECT unnest($1::int[]), $2
"""


@post("/api/notifications", status_code=200)
async def create_notification(
    request: Request,
    data: JSONBody[NotificationCreateRequest],
    db_pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
) -> NotificationCreatedResponse:
    """Store a notification for the recipients (admins only)."""
    caller = await resolve_caller(request, db_pool, settings)
    require_admin(caller)
    notification = data.notification
    content_category = type(notification.content).__struct_config__.tag
    if content_category != notification.category:
        raise ValidationException(
            f"notification.content.category {content_category!r} does not match "
            f"notification.category {notification.category!r}"
        )
    publication = _utc(notification.publication_time) or _now()
    expiration = _utc(notification.expiration_time) or publication + DEFAULT_LIFETIME
    if expiration <= publication:
        raise ValidationException(
            "notification.expiration_time must be after notification.publication_time"
        )

    async with db_pool.acquire() as conn, conn.transaction():
        user_ids = await _expand_recipients(conn, data)
        row = await conn.fetchrow(
            _INSERT_NOTIFICATION,
            notification.source,
            notification.category,
            notification.variant,
            msgspec.json.encode(notification.content).decode(),
            publication,
            expiration,
            str(request.base_url),
        )
        await conn.execute(_INSERT_ASSOCIATIONS, sorted(user_ids), row["id"])
    return NotificationCreatedResponse(
        total_notifications_sent=len(user_ids),
        notification=_notification_response(row),
    )


async def _expand_recipients(
    conn: asyncpg.Connection, data: NotificationCreateRequest
) -> set[int]:
    """Users named directly or through groups and roles, each once.

    Groups and roles are expanded through `group_role_association` until no
    new group or role appears, as Galaxy's default strategy does.
    """
    recipients = data.recipients
    await _check_known(conn, "galaxy_user", "recipients.user_ids", recipients.user_ids)
    await _check_known(
        conn, "galaxy_group", "recipients.group_ids", recipients.group_ids
    )
    await _check_known(conn, "role", "recipients.role_ids", recipients.role_ids)

    groups, roles = set(recipients.group_ids), set(recipients.role_ids)
    while True:
        more_roles = await conn.fetch(
            "SELECT role_id FROM group_role_association WHERE group_id = ANY($1)",
            list(groups),
        )
        more_groups = await conn.fetch(
            "SELECT group_id FROM group_role_association WHERE role_id = ANY($1)",
            list(roles),
        )
        new_roles = {r["role_id"] for r in more_roles} - roles
        new_groups = {r["group_id"] for r in more_groups} - groups
        if not new_roles and not new_groups:
            break
        roles |= new_roles
        groups |= new_groups

    rows = await conn.fetch(
        """
        SELECT user_id FROM user_group_association WHERE group_id = ANY($1)
        UNION SELECT user_id FROM user_role_association WHERE role_id = ANY($2)
        """,
        list(groups),
        list(roles),
    )
    users = set(recipients.user_ids) | {r["user_id"] for r in rows}
    if not users:
        raise ValidationException("recipients must name at least one user")
    return users


async def _check_known(
    conn: asyncpg.Connection, table: str, field: str, ids: list[int]
) -> None:
    if not ids:
        return
    known = await conn.fetch(f"SELECT id FROM {table} WHERE id = ANY($1)", ids)
    unknown = sorted(set(ids) - {r["id"] for r in known})
    if unknown:
        raise ValidationException(f"{field} names unknown ids: {unknown}")


def _notification_response(row: asyncpg.Record) -> NotificationResponse:
    return NotificationResponse(
        id=str(row["id"]),
        source=row["source"],
        category=row["category"],
        variant=row["variant"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        publication_time=row["publication_time"],
        expiration_time=row["expiration_time"],
        content=msgspec.json.decode(row["content"]),
    )


def _utc(value: datetime | None) -> datetime | None:
    """Naive UTC, as stored; naive input is taken to be UTC already."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
