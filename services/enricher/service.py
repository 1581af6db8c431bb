"""Enricher service: a durable pull consumer that turns changes into events.

Any number of enrichers share one durable consumer. A change is acknowledged
only after every event it yields is stored in `TIDINGS_EVENTS`, and each event
carries a `Nats-Msg-Id` derived from the change, so a change redelivered after
a crash yields no second event.
"""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tidings.enricher.audience import RESOLVERS, Delivery
from tidings.shared.db import create_pool
from tidings.shared.events import Change, change_decoder, encode
from tidings.shared.http import HttpServer, health_app
from tidings.shared.logs import get_logger
from tidings.shared.nats import connect_nats, ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGE_PREFIX,
    CHANGES_STREAM,
    ENRICHER_DURABLE,
    EVENT_TYPE_HEADER,
    event_subject,
)

log = get_logger(__name__)

FETCH_BATCH = 64
FETCH_TIMEOUT_SECONDS = 1.0
MAX_DELIVER = 5
ACK_WAIT_SECONDS = 30.0


class Enricher:
    """One enricher replica."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task | None = None
        self._http = HttpServer(
            health_app(self.is_ready), settings.host, settings.enricher_port
        )

    async def start(self) -> None:
        """Connect, bind the durable consumer and start consuming."""
        self._pool = await create_pool(self.settings.database_url)
        self._nc = await connect_nats(self.settings, "enricher")
        self._js = self._nc.jetstream()
        await ensure_streams(self._js, self.settings)
        subscription = await self._js.pull_subscribe(
            f"{CHANGE_PREFIX}.>",
            durable=ENRICHER_DURABLE,
            stream=CHANGES_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=MAX_DELIVER,
                ack_wait=ACK_WAIT_SECONDS,
            ),
        )
        self._task = asyncio.create_task(self._consume(subscription))
        await self._http.start()
        log.info("enricher started", durable=ENRICHER_DURABLE)

    async def stop(self) -> None:
        """Stop consuming; unacknowledged changes are redelivered to another replica."""
        await self._http.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._nc is not None:
            # Not drain(): a pull request cancelled mid-fetch would keep drain
            # waiting for its full timeout. Acks are flushed by close().
            await self._nc.flush()
            await self._nc.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("enricher stopped")

    def is_ready(self) -> bool:
        """Whether NATS is connected and the consumer loop runs."""
        running = self._task is not None and not self._task.done()
        return running and self._nc is not None and self._nc.is_connected

    async def _consume(self, subscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(
                    FETCH_BATCH, timeout=FETCH_TIMEOUT_SECONDS
                )
            except (TimeoutError, NatsTimeoutError):
                continue
            for msg in messages:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            change = change_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("undecodable change dropped", subject=msg.subject, error=str(exc))
            await msg.term()
            return
        resolver = RESOLVERS.get(change.kind)
        if resolver is None:
            log.error("change of unknown kind dropped", kind=change.kind)
            await msg.term()
            return
        assert self._pool is not None
        delivery = await resolver(self._pool, change)
        if delivery is not None:
            await self._publish(msg, change, delivery)
        await msg.ack()

    async def _publish(self, msg: Msg, change: Change, delivery: Delivery) -> None:
        assert self._js is not None
        change_id = (msg.headers or {}).get("Nats-Msg-Id") or msg.reply
        payload = encode(delivery.data)
        for audience in delivery.audiences:
            await self._js.publish(
                event_subject(audience),
                payload,
                headers={
                    EVENT_TYPE_HEADER: delivery.event_type,
                    "Nats-Msg-Id": f"{change_id}:{audience}",
                },
            )
        log.info(
            "change enriched",
            kind=change.kind,
            key=change.key,
            event_type=delivery.event_type,
            recipients=len(delivery.audiences),
        )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one enricher until `stop` is set."""
    enricher = Enricher(settings)
    await enricher.start()
    try:
        await stop.wait()
    finally:
        await enricher.stop()
