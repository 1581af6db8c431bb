"""Stale-audience changes reach every replica's cache, and are applied before use.

Replicas share one durable consumer, so each change reaches one of them only.
An `audience` change must reach all of them, so each replica also reads
`tidings.change.audience.>` through its own ordered consumer.

A replica handling a change at stream sequence S must first apply every
`audience` change stored before S. `fence()` reads the sequence of the last
`audience` change stored so far and waits until the feed has applied it.
Stream sequences grow with storage order, so that covers everything before S.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from tidings.enricher.cache import AudienceCache
from tidings.shared.logs import get_logger
from tidings.shared.subjects import AUDIENCE_KIND, CHANGES_STREAM, change_subject

log = get_logger(__name__)

AUDIENCE_SUBJECTS = change_subject(AUDIENCE_KIND, ">")
_TAG_START = len(AUDIENCE_SUBJECTS) - 1


class InvalidationFeed:
    """One replica's subscription to `audience` changes, applied to its cache."""

    def __init__(
        self, js: JetStreamContext, cache: AudienceCache, fence_timeout: float = 1.0
    ):
        self._js = js
        self._cache = cache
        self._fence_timeout = fence_timeout
        self._applied = 0
        self._progress = asyncio.Event()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe from the first `audience` change after the last one stored.

        The cache starts empty, so older invalidations have nothing to drop.
        """
        self._applied = await self._last_stored_sequence()
        self._subscription = await self._js.subscribe(
            AUDIENCE_SUBJECTS,
            stream=CHANGES_STREAM,
            cb=self._apply,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self._applied + 1,
            ),
        )

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def fence(self) -> None:
        """Wait until every `audience` change stored so far is applied.

        When the feed does not catch up within the fence timeout (NATS
        reconnecting, an ordered consumer being recreated), the whole cache
        is dropped instead: lookups then read Postgres, so no stale audience
        is served.
        """
        if self._cache.max_entries <= 0:
            return
        target = await self._last_stored_sequence()
        try:
            async with asyncio.timeout(self._fence_timeout):
                while self._applied < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.warning(
                "audience cache dropped: invalidations lag behind",
                applied_sequence=self._applied,
                stored_sequence=target,
            )
            self._cache.clear()
            self._applied = max(self._applied, target)

    async def _apply(self, msg: Msg) -> None:
        tag = msg.subject[_TAG_START:]
        dropped = self._cache.invalidate(tag)
        self._applied = max(self._applied, msg.metadata.sequence.stream)
        self._progress.set()
        log.debug("audience invalidated", tag=tag, dropped=dropped)

    async def _last_stored_sequence(self) -> int:
        try:
            msg = await self._js.get_last_msg(CHANGES_STREAM, AUDIENCE_SUBJECTS)
        except NotFoundError:
            return 0
        return msg.seq or 0
