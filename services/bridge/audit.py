"""Reading changes from the audit tables that the change triggers write.

A change is named by its kind and key. Its time is the newest audit row of
that key: `history_audit.update_time` for histories (Galaxy's own table) and
`tidings_change_audit.change_time` for every other kind. Audit times are
`timestamp without time zone` holding UTC, so they come back as naive
datetimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

HISTORY_KIND = "history"

# A change's kind and key, e.g. ("history", "42").
ChangeKey = tuple[str, str]

# max() over one key is read from the end of an index, whatever the
# number of rows the key has.
_HISTORY_LATEST = """
SELECT ids.id::text AS key,
       (SELECT max(update_time) FROM history_audit WHERE history_id = ids.id) AS time
FROM unnest($1::int[]) AS ids(id)
"""
_OTHER_LATEST = """
SELECT keys.kind, keys.key,
       (SELECT max(change_time) FROM tidings_change_audit AS a
        WHERE a.kind = keys.kind AND a.key = keys.key) AS time
FROM unnest($1::text[], $2::text[]) AS keys(kind, key)
"""
_HISTORY_SINCE = """
SELECT history_id::text AS key, max(update_time) AS time
FROM history_audit WHERE update_time > $1 GROUP BY history_id
"""
_OTHER_SINCE = """
SELECT kind, key, max(change_time) AS time
FROM tidings_change_audit WHERE change_time > $1 GROUP BY kind, key
"""
_NOW = "SELECT clock_timestamp() AT TIME ZONE 'UTC'"


async def latest_times(
    conn: asyncpg.Connection | asyncpg.Pool, keys: Iterable[ChangeKey]
) -> dict[ChangeKey, datetime]:
    """Return the newest audit time of each key; keys without audit rows are absent."""
    history_ids: list[int] = []
    other_kinds: list[str] = []
    other_keys: list[str] = []
    for kind, key in keys:
        if kind == HISTORY_KIND:
            history_ids.append(int(key))
        else:
            other_kinds.append(kind)
            other_keys.append(key)

    times: dict[ChangeKey, datetime] = {}
    if history_ids:
        for row in await conn.fetch(_HISTORY_LATEST, history_ids):
            if row["time"] is not None:
                times[(HISTORY_KIND, row["key"])] = row["time"]
    if other_keys:
        for row in await conn.fetch(_OTHER_LATEST, other_kinds, other_keys):
            if row["time"] is not None:
                times[(row["kind"], row["key"])] = row["time"]
    return times


async def changed_since(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime
) -> dict[ChangeKey, datetime]:
    """Return every key with an audit row after `since`, with its newest time."""
    times: dict[ChangeKey, datetime] = {}
    for row in await conn.fetch(_HISTORY_SINCE, since):
        times[(HISTORY_KIND, row["key"])] = row["time"]
    for row in await conn.fetch(_OTHER_SINCE, since):
        times[(row["kind"], row["key"])] = row["time"]
    return times


async def database_now(conn: asyncpg.Connection | asyncpg.Pool) -> datetime:
    """Return the database's clock as a naive UTC datetime, as audit times are."""
    return await conn.fetchval(_NOW)
