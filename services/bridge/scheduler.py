"""Scheduled notifications: a change when a notification's publication time comes.

The enricher delivers a notification only once its `publication_time` has
passed, so the change that inserted a notification scheduled for later
reaches no one. The scheduler publishes a second change of that notification
when its time comes, carrying the publication time and a `Nats-Msg-Id` of its
own. A notification needs one when none of its changes happened at or after
its publication time. Expired notifications get none.

A timer sleeps until the next publication time, at most `MAX_SLEEP_SECONDS`;
every change of a notification wakes it to look again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from nats.js import JetStreamContext

from tidings.bridge.audit import database_now
from tidings.bridge.catchup import not_in_stream
from tidings.bridge.publisher import Publisher, due_msg_id
from tidings.bridge.retry import Backoff
from tidings.shared.events import Change
from tidings.shared.logs import get_logger

log = get_logger(__name__)

MAX_SLEEP_SECONDS = 60.0
# The enricher compares publication times with its own clock, so the change
# goes out this much after the database's clock reaches the publication time,
# to absorb a small clock difference between hosts.
DUE_GRACE_SECONDS = 0.2

_DUE = """
SELECT n.id::text AS key, n.publication_time
FROM notification AS n
WHERE n.publication_time > $1 AND n.publication_time <= $2
  AND (n.expiration_time IS NULL OR n.expiration_time > $3)
  AND NOT EXISTS (
      SELECT 1 FROM tidings_change_audit AS a
      WHERE a.kind = 'notification' AND a.key = n.id::text
        AND a.change_time >= n.publication_time)
ORDER BY n.publication_time
"""
_NEXT_DUE = """
SELECT min(publication_time) FROM notification
WHERE publication_time > $1
  AND (expiration_time IS NULL OR expiration_time > publication_time)
"""


class Scheduler:
    """Publishes each scheduled notification's change when its time comes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        publisher: Publisher,
        since: datetime,
        watermark: datetime | None,
    ):
        self._pool = pool
        self._js = js
        self._publisher = publisher
        # Publication times up to `_since` (naive UTC) have been handled.
        self._since = since
        self._watermark = watermark
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Look again now: a notification was inserted or changed."""
        self._poked.set()

    async def run(self) -> None:
        """Publish due notifications and sleep until the next one, until cancelled."""
        while True:
            self._poked.clear()
            delay = await self.publish_due()
            try:
                await asyncio.wait_for(self._poked.wait(), delay)
            except TimeoutError:
                pass

    async def publish_due(self) -> float:
        """Publish every notification that came due; return seconds to the next one."""
        now = await database_now(self._pool) - timedelta(seconds=DUE_GRACE_SECONDS)
        rows = await self._pool.fetch(_DUE, self._since, now, now)
        due = {("notification", row["key"]): row["publication_time"] for row in rows}
        if self._watermark is not None:
            # The first pass after a gap may find changes an old leader published.
            keys = await not_in_stream(self._js, due, self._watermark)
            due = {key: due[key] for key in keys}
            self._watermark = None
        for (kind, key), publication_time in due.items():
            await self._publish(Change(kind, key, publication_time.replace(tzinfo=UTC)))
        self._since = now

        next_due = await self._pool.fetchval(_NEXT_DUE, now)
        if next_due is None:
            return MAX_SLEEP_SECONDS
        return min(MAX_SLEEP_SECONDS, (next_due - now).total_seconds())

    async def _publish(self, change: Change) -> None:
        backoff = Backoff()
        while await self._publisher.publish([(change, due_msg_id(change))]):
            log.warning("publishing a scheduled notification failed; retrying")
            await backoff.sleep()
        log.info(
            "scheduled notification published",
            key=change.key,
            publication_time=change.commit_time.isoformat(),
        )
