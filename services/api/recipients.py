"""Expanding a notification's recipients (users, groups, roles) to users."""

from __future__ import annotations

import asyncpg
from litestar.exceptions import ValidationException

from tidings.api.schemas import Recipients

_ROLES_OF_GROUPS = "SELECT role_id FROM group_role_association WHERE group_id = ANY($1)"
_GROUPS_OF_ROLES = "SELECT group_id FROM group_role_association WHERE role_id = ANY($1)"
_MEMBERS = """
SELECT user_id FROM user_group_association WHERE group_id = ANY($1)
UNION SELECT user_id FROM user_role_association WHERE role_id = ANY($2)
"""


async def expand_recipients(
    conn: asyncpg.Connection, recipients: Recipients
) -> set[int]:
    """Return the users named directly or through groups and roles, each once.

    Groups and roles are expanded through `group_role_association` until no
    new group or role appears, as Galaxy's default strategy does. Unknown
    ids, or recipients that expand to no user, raise a 400 naming the field.
    """
    await _check_known(conn, "galaxy_user", "recipients.user_ids", recipients.user_ids)
    await _check_known(
        conn, "galaxy_group", "recipients.group_ids", recipients.group_ids
    )
    await _check_known(conn, "role", "recipients.role_ids", recipients.role_ids)

    groups, roles = await _close_groups_and_roles(
        conn, set(recipients.group_ids), set(recipients.role_ids)
    )
    rows = await conn.fetch(_MEMBERS, list(groups), list(roles))
    users = set(recipients.user_ids) | {r["user_id"] for r in rows}
    if not users:
        raise ValidationException("recipients must name at least one user")
    return users


async def _close_groups_and_roles(
    conn: asyncpg.Connection, groups: set[int], roles: set[int]
) -> tuple[set[int], set[int]]:
    while True:
        more_roles = await conn.fetch(_ROLES_OF_GROUPS, list(groups))
        more_groups = await conn.fetch(_GROUPS_OF_ROLES, list(roles))
        new_roles = {r["role_id"] for r in more_roles} - roles
        new_groups = {r["group_id"] for r in more_groups} - groups
        if not new_roles and not new_groups:
            return groups, roles
        roles |= new_roles
        groups |= new_groups


async def _check_known(
    conn: asyncpg.Connection, table: str, field: str, ids: list[int]
) -> None:
    if not ids:
        return
    known = await conn.fetch(f"SELECT id FROM {table} WHERE id = ANY($1)", ids)
    unknown = sorted(set(ids) - {r["id"] for r in known})
    if unknown:
        raise ValidationException(f"{field} names unknown ids: {unknown}")
