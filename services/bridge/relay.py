"""From changed keys to published changes: coalesce, read audit times, publish.

Keys come from NOTIFY payloads, catch-up scans and polls. Each key ready to
go out is read back from its audit table in one query per batch, so the
change carries the time of the key's newest audit row and a `Nats-Msg-Id`
derived from it. A batch is published with every message in flight at once.
Keys wait in a set, so a key that changes again before its turn goes out
once: a burst slows the bridge down gracefully instead of queueing without
bound.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg

from tidings.bridge import metrics
from tidings.bridge.audit import ChangeKey, latest_times
from tidings.bridge.coalesce import Coalescer
from tidings.bridge.publisher import Publisher, change_msg_id
from tidings.bridge.retry import DATABASE_ERRORS, Backoff
from tidings.shared.errors import BridgeError
from tidings.shared.events import Change
from tidings.shared.logs import get_logger

log = get_logger(__name__)

MAX_BATCH = 1000


class Relay:
    """Publishes the newest audit time of every key offered to it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        coalesce_seconds: float,
    ):
        self._pool = pool
        self._publisher = publisher
        # Keys waiting to be published, with the monotonic time each began
        # to wait; `_in_flight` contains those of the batch being published.
        self._ready: dict[ChangeKey, float] = {}
        self._in_flight: dict[ChangeKey, float] = {}
        self._has_ready = asyncio.Event()
        self._coalescer = Coalescer(coalesce_seconds, self._mark_ready)

    def offer(self, key: ChangeKey) -> None:
        """Publish `key`'s newest change now, or at the end of its coalescing window."""
        self._coalescer.offer(key)

    @property
    def backlog(self) -> int:
        """Number of keys waiting to be read and published."""
        return len(self._ready)

    def oldest_wait_seconds(self) -> float:
        """Return how long the longest-waiting unpublished key has waited, or 0."""
        waiting = [*self._ready.values(), *self._in_flight.values()]
        return time.monotonic() - min(waiting) if waiting else 0.0

    @property
    def coalescing(self) -> int:
        """Number of keys inside a coalescing window."""
        return self._coalescer.open_windows

    async def run(self) -> None:
        """Publish ready keys until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._coalescer.run())
            tasks.create_task(self._publish_ready())

    def _mark_ready(self, key: ChangeKey, since: float | None = None) -> None:
        self._ready.setdefault(key, time.monotonic() if since is None else since)
        self._has_ready.set()

    async def _publish_ready(self) -> None:
        backoff = Backoff()
        while True:
            await self._has_ready.wait()
            batch = self._take_batch()
            try:
                await self._publish_batch(batch)
            except DATABASE_ERRORS as exc:
                self._retry_later(batch, exc)
                await backoff.sleep()
            except PublishFailedError as exc:
                self._retry_later(exc.keys, exc)
                await backoff.sleep()
            else:
                backoff.reset()
            self._in_flight.clear()

    def _retry_later(self, keys: list[ChangeKey], exc: Exception) -> None:
        for key in keys:
            self._mark_ready(key, self._in_flight.get(key))
        log.warning(
            "publishing changes failed; retrying",
            keys=len(keys),
            error=str(exc) or type(exc).__name__,
        )

    def _take_batch(self) -> list[ChangeKey]:
        batch = []
        for key in self._ready:
            batch.append(key)
            if len(batch) == MAX_BATCH:
                break
        for key in batch:
            self._in_flight[key] = self._ready.pop(key)
        if not self._ready:
            self._has_ready.clear()
        return batch

    async def _publish_batch(self, batch: list[ChangeKey]) -> None:
        started = time.perf_counter()
        times = await latest_times(self._pool, batch)
        changes = []
        for key in batch:
            audit_time = times.get(key)
            if audit_time is None:
                log.warning("change without audit row ignored", kind=key[0], key=key[1])
                continue
            commit_time = audit_time.replace(tzinfo=UTC)
            if self._coalescer.published_time(key) == commit_time:
                continue
            kind, name = key
            changes.append(Change(kind, name, commit_time))

        stored_before = self._publisher.stored
        failed = await self._publisher.publish(
            [(change, change_msg_id(change)) for change in changes]
        )
        failed_keys = [(change.kind, change.key) for change in failed]
        unacked = set(failed_keys)
        for change in changes:
            key = (change.kind, change.key)
            if key not in unacked:
                self._coalescer.record_published(key, change.commit_time)
                metrics.PUBLISH_LATENCY.observe(_seconds_since(change.commit_time))
        if failed:
            raise PublishFailedError(failed_keys, len(changes))
        if changes:
            log.info(
                "changes published",
                count=len(changes),
                stored=self._publisher.stored - stored_before,
                backlog=len(self._ready),
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            )


def _seconds_since(moment: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


class PublishFailedError(BridgeError):
    """JetStream did not acknowledge some changes of a batch."""

    def __init__(self, keys: list[ChangeKey], batch_size: int):
        super().__init__(f"JetStream acked {batch_size - len(keys)} of {batch_size}")
        self.keys = keys
