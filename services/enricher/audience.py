"""Who must hear a change: one registry entry per kind of change.

Adding a watched kind means a trigger and one entry in `RESOLVERS`. Most
kinds are rows that belong to a user, or else to anonymous sessions. An
`OwnedRows` entry names the query that finds that owner and builds the event.
Kinds with other rules (notifications, broadcasts, stale-audience changes)
have a resolver function of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from tidings.enricher.cache import AudienceCache
from tidings.shared.errors import TidingsError
from tidings.shared.events import (
    BroadcastUpdate,
    Change,
    EntryPointUpdate,
    HistoryUpdate,
    NotificationUpdate,
)
from tidings.shared.subjects import (
    ALL_AUDIENCE,
    AUDIENCE_KIND,
    session_audience,
    user_audience,
)

MAX_ROW_ID = 2**31 - 1


class PoisonChange(TidingsError):
    """A change that no retry can enrich, such as one whose key is not a row id."""


class Delivery(msgspec.Struct, frozen=True):
    """An event to publish to some audiences."""

    event_type: str
    data: msgspec.Struct
    audiences: list[str]


class Lookups:
    """The resolvers' database reads, through the replica's audience cache."""

    def __init__(self, pool: asyncpg.Pool, cache: AudienceCache):
        self.pool = pool
        self.cache = cache

    async def fetch(self, sql: str, row_id: int) -> list[asyncpg.Record]:
        """Run `sql` with `row_id` as `$1`, bypassing the cache."""
        return await self.pool.fetch(sql, row_id)

    async def fetch_cached(
        self,
        key: str,
        sql: str,
        row_id: int,
        tags: Callable[[list[asyncpg.Record]], list[str]],
    ) -> list[asyncpg.Record]:
        """Return the cached rows of `key`, or run `sql` and cache its rows.

        `tags` names the tags of the rows, for invalidation.
        """
        rows = self.cache.get(key)
        if rows is not None:
            return rows
        generation = self.cache.generation
        rows = await self.pool.fetch(sql, row_id)
        self.cache.put(key, rows, tags(rows), generation)
        return rows


Resolver = Callable[[Lookups, Change], Awaitable[Delivery | None]]


def row_id(change: Change) -> int:
    """Return the change's key as a row id, or raise `PoisonChange`."""
    key = change.key
    if not (key.isascii() and key.isdigit()) or not 0 < int(key) <= MAX_ROW_ID:
        raise PoisonChange(f"key {key!r} of a {change.kind!r} change is not a row id")
    return int(key)


def owner_audiences(rows: list[asyncpg.Record]) -> list[str]:
    """Return the audiences of owner rows: the user, else the session's hash."""
    audiences = []
    for row in rows:
        if row["user_id"] is not None:
            audiences.append(user_audience(row["user_id"]))
        elif row["session_key"]:
            audiences.append(session_audience(row["session_key"]))
    return list(dict.fromkeys(audiences))


@dataclass(frozen=True)
class OwnedRows:
    """A kind whose rows belong to a user, or else to anonymous sessions.

    `sql` takes the change's key as `$1` and returns one row per owner, with
    the columns `user_id`, `session_key` and `session_id` (NULL where they do
    not apply), plus any column `data` reads. With `cached`, rows are kept
    under the tags `<kind>:<key>` and `session:<session_id>`, which
    `audience` changes of the same names invalidate.
    """

    event_type: str
    sql: str
    data: Callable[[Change, list[asyncpg.Record]], msgspec.Struct]
    cached: bool = True

    async def __call__(self, lookups: Lookups, change: Change) -> Delivery | None:
        key = row_id(change)
        if self.cached:
            cache_key = f"{change.kind}:{change.key}"

            def tags(rows: list[asyncpg.Record]) -> list[str]:
                sessions = {r["session_id"] for r in rows} - {None}
                return [cache_key, *(f"session:{s}" for s in sorted(sessions))]

            rows = await lookups.fetch_cached(cache_key, self.sql, key, tags)
        else:
            rows = await lookups.fetch(self.sql, key)
        audiences = owner_audiences(rows)
        if not audiences:
            return None
        return Delivery(self.event_type, self.data(change, rows), audiences)


_HISTORY_OWNERS = """
SELECT h.user_id, NULL::text AS session_key, NULL::integer AS session_id
FROM history AS h
WHERE h.id = $1 AND h.user_id IS NOT NULL
UNION ALL
SELECT NULL, s.session_key, s.id
FROM history AS h
JOIN galaxy_session_to_history AS sh ON sh.history_id = h.id
JOIN galaxy_session AS s ON s.id = sh.session_id
WHERE h.id = $1 AND h.user_id IS NULL
    AND s.user_id IS NULL AND s.session_key IS NOT NULL
"""

# An anonymous job belongs to its session, or to the session's user once
# the session has logged in.
_ENTRY_POINT_OWNERS = """
SELECT COALESCE(j.user_id, s.user_id) AS user_id,
    CASE WHEN s.user_id IS NULL THEN s.session_key END AS session_key,
    s.id AS session_id,
    ep.job_id
FROM interactivetool_entry_point AS ep
JOIN job AS j ON j.id = ep.job_id
LEFT JOIN galaxy_session AS s ON s.id = j.session_id AND j.user_id IS NULL
WHERE ep.id = $1
"""

_NOTIFICATION_RECIPIENT = """
SELECT una.user_id, NULL::text AS session_key, NULL::integer AS session_id,
    una.notification_id
FROM user_notification_association AS una
JOIN notification AS n ON n.id = una.notification_id
WHERE una.id = $1 AND una.user_id IS NOT NULL
    AND n.publication_time <= (now() AT TIME ZONE 'UTC')
"""

_NOTIFICATION = """
SELECT category, publication_time, expiration_time FROM notification WHERE id = $1
"""
_NOTIFICATION_RECIPIENTS = """
SELECT DISTINCT user_id AS user_id, NULL::text AS session_key
FROM user_notification_association
WHERE notification_id = $1 AND user_id IS NOT NULL
ORDER BY user_id
"""


def _history_update(change: Change, rows: list[asyncpg.Record]) -> HistoryUpdate:
    return HistoryUpdate(history_ids=[change.key], update_time=change.commit_time)


def _entry_point_update(change: Change, rows: list[asyncpg.Record]) -> EntryPointUpdate:
    return EntryPointUpdate(
        entry_point_ids=[change.key],
        job_ids=[str(rows[0]["job_id"])],
        update_time=change.commit_time,
    )


def _notification_seen_update(
    change: Change, rows: list[asyncpg.Record]
) -> NotificationUpdate:
    return NotificationUpdate(
        notification_ids=[str(rows[0]["notification_id"])],
        update_time=change.commit_time,
    )


async def resolve_notification(lookups: Lookups, change: Change) -> Delivery | None:
    """Resolve a notification change for everyone or for its recipients.

    A broadcast reaches everyone, another notification its recipients.

    A user notification whose publication time lies in the future is heard
    by no one yet. A broadcast is always announced, because a client that
    refetches the active broadcasts also learns that one was withdrawn or
    rescheduled.
    """
    notification_id = row_id(change)
    rows = await lookups.fetch(_NOTIFICATION, notification_id)
    if not rows:
        return None
    ids = [change.key]
    if rows[0]["category"] == "broadcast":
        data = BroadcastUpdate(notification_ids=ids, update_time=change.commit_time)
        return Delivery("broadcast_update", data, [ALL_AUDIENCE])
    now = datetime.now(UTC).replace(tzinfo=None)
    if rows[0]["publication_time"] > now:
        # NOTE: the bridge publishes a `notification` change again when the
        # publication time comes; this one is early.
        return None
    expiration = rows[0]["expiration_time"]
    if expiration is not None and expiration <= now:
        # An expired notification is never shown, so no event is published.
        return None
    recipients = await lookups.fetch(_NOTIFICATION_RECIPIENTS, notification_id)
    audiences = owner_audiences(recipients)
    if not audiences:
        return None
    data = NotificationUpdate(notification_ids=ids, update_time=change.commit_time)
    return Delivery("notification_update", data, audiences)


async def forget_stale_audience(lookups: Lookups, change: Change) -> None:
    """Drop the cached lookups tagged with the change's key; it yields no event."""
    lookups.cache.invalidate(change.key)
    return None


RESOLVERS: dict[str, Resolver] = {
    "history": OwnedRows("history_update", _HISTORY_OWNERS, _history_update),
    "notification": resolve_notification,
    "user_notification": OwnedRows(
        "notification_update",
        _NOTIFICATION_RECIPIENT,
        _notification_seen_update,
        cached=False,
    ),
    "entry_point": OwnedRows(
        "entry_point_update", _ENTRY_POINT_OWNERS, _entry_point_update
    ),
    AUDIENCE_KIND: forget_stale_audience,
}
