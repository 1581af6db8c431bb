"""Pruning audit rows that the bridge has published, so the tables stay bounded.

A row is pruned once it is older than the retention age and, when the stream
contains changes, older than its watermark less the overlap window, so a
catch-up never needs it.
The newest row of each key is kept, so the key's newest audit time stays
readable. Rows go in batches of `BATCH_SIZE`, each its own short transaction,
so pruning never holds many locks for long.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
from nats.js import JetStreamContext

from tidings.bridge.audit import database_now
from tidings.bridge.catchup import stream_watermark
from tidings.shared.logs import get_logger

log = get_logger(__name__)

BATCH_SIZE = 1000
INTERVAL_SECONDS = 600.0

_PRUNE_HISTORY = """
DELETE FROM history_audit WHERE (history_id, update_time) IN (
    SELECT a.history_id, a.update_time FROM history_audit AS a
    WHERE a.update_time < $1
      AND EXISTS (SELECT 1 FROM history_audit AS newer
                  WHERE newer.history_id = a.history_id
                    AND newer.update_time > a.update_time)
    LIMIT $2)
"""
_PRUNE_CHANGES = """
DELETE FROM tidings_change_audit WHERE id IN (
    SELECT a.id FROM tidings_change_audit AS a
    WHERE a.change_time < $1
      AND EXISTS (SELECT 1 FROM tidings_change_audit AS newer
                  WHERE newer.kind = a.kind AND newer.key = a.key
                    AND newer.change_time > a.change_time)
    LIMIT $2)
"""


class Retention:
    """Prunes published audit rows older than a retention age."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        max_age_seconds: float,
        overlap_seconds: float,
    ):
        self._pool = pool
        self._js = js
        self._max_age = timedelta(seconds=max_age_seconds)
        self._overlap = timedelta(seconds=overlap_seconds)

    async def run(self) -> None:
        """Prune every `INTERVAL_SECONDS` until cancelled; age 0 prunes nothing."""
        if self._max_age <= timedelta(0):
            return await asyncio.Event().wait()
        while True:
            await self.prune_once()
            await asyncio.sleep(INTERVAL_SECONDS)

    async def prune_once(self) -> int:
        """Prune every prunable row now; return how many were deleted."""
        cutoff = await self.cutoff()
        deleted = 0
        for statement in (_PRUNE_HISTORY, _PRUNE_CHANGES):
            while True:
                status = await self._pool.execute(statement, cutoff, BATCH_SIZE)
                count = int(status.split()[-1])
                deleted += count
                if count < BATCH_SIZE:
                    break
        log.info("audit rows pruned", deleted=deleted, cutoff=cutoff.isoformat())
        return deleted

    async def cutoff(self) -> datetime:
        """Return the time (naive UTC) before which published rows may go."""
        cutoff = await database_now(self._pool) - self._max_age
        watermark = await stream_watermark(self._js)
        if watermark is not None:
            cutoff = min(cutoff, watermark - self._overlap)
        return cutoff
