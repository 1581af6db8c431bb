"""Catch-up and polling: publish what the audit tables hold after a watermark.

The watermark is the commit time of the last change in `TIDINGS_CHANGES`, so
it follows what JetStream stores. JetStream acknowledges before it syncs to
disk by default, so a crash can lose the stream's tail. The watermark then
moves back, and the lost changes are published again from Postgres, the
source of truth.
An empty stream gives no watermark, and the scan then reaches back as far as
the stream keeps changes.

Audit rows become visible in commit order, not in the order of their times:
a transaction that started earlier can commit later with an older time. A
scan therefore starts an overlap window before the watermark. Changes found
there that the stream already contains are skipped, and `Nats-Msg-Id` absorbs
any other repeat. A row that becomes visible more than the overlap window
after its time, while no LISTEN hears its NOTIFY, is missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tidings.bridge import metrics
from tidings.bridge.audit import ChangeKey, changed_since, database_now
from tidings.shared.events import change_decoder
from tidings.shared.logs import get_logger
from tidings.shared.subjects import CHANGE_PREFIX, CHANGES_STREAM, change_subject

log = get_logger(__name__)

# Lookups of a subject's last message in flight at once.
STREAM_LOOKUPS_IN_FLIGHT = 100


async def stream_watermark(js: JetStreamContext) -> datetime | None:
    """Return the commit time (naive UTC) of the last change in the stream, if any."""
    try:
        msg = await js.get_last_msg(CHANGES_STREAM, f"{CHANGE_PREFIX}.>")
    except NotFoundError:
        return None
    return _naive_utc(change_decoder.decode(msg.data).commit_time)


async def last_stored_time(js: JetStreamContext, key: ChangeKey) -> datetime | None:
    """Return the commit time (naive UTC) of the last stored change of `key`, if any."""
    try:
        msg = await js.get_last_msg(CHANGES_STREAM, change_subject(*key))
    except NotFoundError:
        return None
    return _naive_utc(change_decoder.decode(msg.data).commit_time)


async def start_of_scan(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    overlap_seconds: float,
    max_age_seconds: float,
) -> tuple[datetime, datetime | None]:
    """Return where a catch-up starts, and the watermark it derives from."""
    watermark = await stream_watermark(js)
    floor = await database_now(pool) - timedelta(seconds=max_age_seconds)
    start = floor if watermark is None else max(watermark, floor)
    return start - timedelta(seconds=overlap_seconds), watermark


async def not_in_stream(
    js: JetStreamContext,
    found: dict[ChangeKey, datetime],
    watermark: datetime | None,
) -> list[ChangeKey]:
    """Return the keys of `found` whose time the stream does not hold yet.

    Only keys at or before the watermark can be in the stream; each is
    checked against the last stored change of its subject.
    """
    fresh, older = [], []
    for key, time in found.items():
        if watermark is None or time > watermark:
            fresh.append(key)
        else:
            older.append(key)
    limit = asyncio.Semaphore(STREAM_LOOKUPS_IN_FLIGHT)

    async def is_stored(key: ChangeKey) -> bool:
        async with limit:
            try:
                stored = await last_stored_time(js, key)
            except (NatsError, TimeoutError):
                # Publishing again is safe; the msg id absorbs a repeat.
                return False
        return stored is not None and stored >= found[key]

    stored = await asyncio.gather(*(is_stored(key) for key in older))
    fresh += [key for key, done in zip(older, stored, strict=True) if not done]
    return fresh


class AuditScanner:
    """Catches up after every gap and, in poll mode, polls the audit tables."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        offer: Callable[[ChangeKey], None],
        overlap_seconds: float,
        max_age_seconds: float,
    ):
        self._pool = pool
        self._js = js
        self._offer = offer
        self._overlap = timedelta(seconds=overlap_seconds)
        self._max_age_seconds = max_age_seconds
        self._catch_up_requested = asyncio.Event()
        # Newest time offered per key, for keys the next poll scans again.
        self._seen: dict[ChangeKey, datetime] = {}
        self._cursor: datetime | None = None

    def request_catch_up(self) -> None:
        """Catch up again soon, e.g. after NATS came back and may have lost a tail."""
        self._catch_up_requested.set()

    async def run(self, poll_interval: float | None) -> None:
        """Catch up, then catch up on request and poll every `poll_interval` seconds."""
        await self.catch_up()
        while True:
            try:
                await asyncio.wait_for(self._catch_up_requested.wait(), poll_interval)
            except TimeoutError:
                await self.poll_once()
                continue
            self._catch_up_requested.clear()
            await self.catch_up()

    async def catch_up(self) -> int:
        """Offer every key changed after the watermark that the stream lacks."""
        since, watermark = await start_of_scan(
            self._pool, self._js, self._overlap.total_seconds(), self._max_age_seconds
        )
        found = await changed_since(self._pool, since)
        fresh = await not_in_stream(self._js, found, watermark)
        for key in fresh:
            self._offer(key)
        metrics.CATCHUP_ROWS.inc(len(fresh))
        self._seen = dict(found)
        self._cursor = max(found.values(), default=since + self._overlap)
        log.info(
            "catch-up done",
            watermark=watermark.isoformat() if watermark else None,
            since=since.isoformat(),
            scanned=len(found),
            offered=len(fresh),
        )
        return len(fresh)

    async def poll_once(self) -> int:
        """Offer every key whose newest audit time changed since the last scan."""
        if self._cursor is None:
            return await self.catch_up()
        found = await changed_since(self._pool, self._cursor - self._overlap)
        offered = 0
        for key, time in found.items():
            if self._seen.get(key) != time:
                self._seen[key] = time
                self._offer(key)
                offered += 1
        self._cursor = max([self._cursor, *found.values()])
        horizon = self._cursor - self._overlap
        self._seen = {key: time for key, time in self._seen.items() if time > horizon}
        metrics.CHANGES_RECEIVED.inc(offered)
        if offered:
            log.debug("poll found changes", offered=offered)
        return offered


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
