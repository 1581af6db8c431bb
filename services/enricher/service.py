"""Enricher service: a durable pull consumer that turns changes into events.

Any number of enrichers share one durable consumer. A change is acknowledged
only after every event it yields is stored in `TIDINGS_EVENTS`, and each event
carries a `Nats-Msg-Id` derived from the change, so a change redelivered after
a crash yields no second event.

Each fetched batch is handled in order: resolve each change's audience
(mostly from the cache), publish its events without waiting, then wait for
the stream's acknowledgements and acknowledge the changes. Events of one
connection are stored in the order they were sent, so a replica keeps
commit order.

A change that fails is retried: lookups that failed for want of Postgres
are retried in place until it is back, other failures are redelivered with
a growing delay, and after `enricher_max_deliver` deliveries, or at once for
a change that no retry can fix, it goes to the dead letters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import Error as JetStreamError
from opentelemetry import trace
from opentelemetry.trace import Span

from tidings.enricher import metrics
from tidings.enricher.audience import (
    RESOLVERS,
    Delivery,
    Lookups,
    PoisonChange,
    Resolver,
)
from tidings.enricher.cache import AudienceCache
from tidings.enricher.deadletter import DeadLetters
from tidings.enricher.invalidation import InvalidationFeed
from tidings.shared.db import create_pool
from tidings.shared.events import Change, change_decoder, encode
from tidings.shared.http import HttpServer, health_app
from tidings.shared.logs import get_logger
from tidings.shared.nats import connect_nats, ensure_stream, ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGE_PREFIX,
    CHANGES_STREAM,
    COMMIT_TIME_HEADER,
    ENRICHER_DURABLE,
    EVENT_TYPE_HEADER,
    dead_letters_stream_config,
    event_subject,
)
from tidings.shared.telemetry import get_tracer, span_headers, start_span

log = get_logger(__name__)

FETCH_BATCH = 256
FETCH_TIMEOUT_SECONDS = 1.0
PUBLISH_TIMEOUT_SECONDS = 10.0
MAX_RETRY_DELAY_SECONDS = 5.0
# How often the consumer's pending count is read for its gauge.
PENDING_REFRESH_SECONDS = 5.0

tracer = get_tracer(__name__)

# Failures that show Postgres or NATS is unreachable for now, not that the
# change is bad. The lookup is retried in place until they pass.
TRANSIENT_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


@dataclass
class _Published:
    msg: Msg
    change: Change
    delivery: Delivery
    acks: list[asyncio.Future]
    span: Span


class Enricher:
    """One enricher replica."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = AudienceCache(
            settings.enricher_cache_size, settings.enricher_cache_seconds
        )
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pool: asyncpg.Pool | None = None
        self._lookups: Lookups | None = None
        self._feed: InvalidationFeed | None = None
        self._dead_letters: DeadLetters | None = None
        self._task: asyncio.Task | None = None
        self._pending_task: asyncio.Task | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._http = HttpServer(
            health_app(self.is_ready), settings.host, settings.enricher_port
        )

    async def start(self) -> None:
        """Connect, bind the durable consumer and start consuming."""
        self._pool = await create_pool(self.settings.database_url)
        self._lookups = Lookups(self._pool, self.cache)
        self._nc = await connect_nats(self.settings, "enricher")
        self._js = self._nc.jetstream()
        await ensure_streams(self._js, self.settings)
        await ensure_stream(self._js, dead_letters_stream_config(self.settings))
        self._dead_letters = DeadLetters(self._js)
        self._feed = InvalidationFeed(self._js, self.cache)
        await self._feed.start()
        self._subscription = await self._bind_consumer()
        self._task = asyncio.create_task(self._consume(self._subscription))
        self._pending_task = asyncio.create_task(self._refresh_pending())
        await self._http.start()
        log.info("enricher started", durable=ENRICHER_DURABLE)

    async def stop(self) -> None:
        """Stop consuming; unacknowledged changes are redelivered to another replica."""
        await self._http.stop()
        for task in (self._task, self._pending_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._subscription is not None:
            # Draining would wait for pull responses that no one reads now.
            await self._subscription.unsubscribe()
        if self._feed is not None:
            await self._feed.stop()
        if self._nc is not None:
            # Not drain(): a pull request cancelled mid-fetch would keep drain
            # waiting for its full timeout. Acks are flushed by close().
            await self._nc.flush()
            await self._nc.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("enricher stopped")

    def is_ready(self) -> bool:
        """Return whether NATS is connected and the consumer loop runs."""
        running = self._task is not None and not self._task.done()
        return running and self._nc is not None and self._nc.is_connected

    async def _bind_consumer(self) -> JetStreamContext.PullSubscription:
        assert self._js is not None
        # Adding a consumer that exists updates it, so a changed setting
        # (maximum deliveries, ack wait) takes effect on the shared consumer.
        await self._js.add_consumer(
            CHANGES_STREAM,
            ConsumerConfig(
                durable_name=ENRICHER_DURABLE,
                filter_subject=f"{CHANGE_PREFIX}.>",
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=self.settings.enricher_max_deliver,
                ack_wait=self.settings.enricher_ack_wait_seconds,
            ),
        )
        return await self._js.pull_subscribe_bind(
            ENRICHER_DURABLE, stream=CHANGES_STREAM
        )

    async def _refresh_pending(self) -> None:
        """Keep the pending gauge at the consumer's count of undelivered changes."""
        assert self._js is not None
        while True:
            try:
                info = await self._js.consumer_info(CHANGES_STREAM, ENRICHER_DURABLE)
            except (NatsError, JetStreamError, TimeoutError) as exc:
                log.debug("consumer info not read", error=repr(exc))
            else:
                metrics.CONSUMER_PENDING.set(info.num_pending or 0)
            await asyncio.sleep(PENDING_REFRESH_SECONDS)

    async def _consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(
                    FETCH_BATCH, timeout=FETCH_TIMEOUT_SECONDS
                )
                await self._handle_batch(messages)
            except (TimeoutError, NatsTimeoutError):
                continue
            except (NatsError, JetStreamError) as exc:
                # Changes left unacknowledged are redelivered after the ack wait.
                log.warning(
                    "handling a batch of changes failed; fetching again",
                    error=repr(exc),
                )
                await asyncio.sleep(FETCH_TIMEOUT_SECONDS)

    async def _handle_batch(self, messages: list[Msg]) -> None:
        assert self._feed is not None
        await self._feed.fence()
        published = []
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                metrics.REDELIVERIES.inc()
            # The span continues the bridge's trace of this change and ends
            # once the change is acknowledged or handed back.
            span = start_span(
                tracer,
                "enricher resolve audience",
                msg.headers,
                {"messaging.nats.sequence": msg.metadata.sequence.stream},
            )
            try:
                with trace.use_span(span, end_on_exit=False):
                    item = await self._resolve_and_publish(msg, span)
            except BaseException:
                span.end()
                raise
            if item is None:
                span.end()
            else:
                published.append(item)
        for item in published:
            with trace.use_span(item.span, end_on_exit=True):
                await self._acknowledge(item)

    async def _resolve_and_publish(self, msg: Msg, span: Span) -> _Published | None:
        resolved = await self._resolve(msg)
        if resolved is None:
            return None
        change, delivery = resolved
        span.set_attribute("tidings.change.kind", change.kind)
        span.set_attribute("tidings.change.key", change.key)
        span.set_attribute("tidings.recipients", len(delivery.audiences))
        try:
            acks = await self._publish(msg, change, delivery, span)
        except (NatsError, JetStreamError) as exc:
            await self._retry_later(msg, f"publishing failed: {exc!r}")
            return None
        return _Published(msg, change, delivery, acks, span)

    async def _resolve(self, msg: Msg) -> tuple[Change, Delivery] | None:
        """Return the change and the events it yields, or None when `msg` is settled.

        A change that yields no event is acknowledged here; one that failed
        is redelivered later or given up.
        """
        assert self._dead_letters is not None and self._lookups is not None
        try:
            change = change_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            await self._dead_letters.give_up(msg, f"undecodable change: {exc}")
            return None
        resolver = RESOLVERS.get(change.kind)
        if resolver is None:
            await self._dead_letters.give_up(
                msg, f"no resolver for change kind {change.kind!r}"
            )
            return None
        try:
            delivery = await self._resolve_until_reachable(msg, change, resolver)
        except PoisonChange as exc:
            await self._dead_letters.give_up(msg, str(exc))
            return None
        except Exception as exc:
            # Any other failure of a resolver must not stop this replica.
            await self._retry_later(msg, f"{type(exc).__name__}: {exc}")
            return None
        if delivery is None or not delivery.audiences:
            await msg.ack()
            metrics.CHANGES_PROCESSED.labels(change.kind).inc()
            metrics.AUDIENCE_SIZE.observe(0)
            log.debug("change has no audience", kind=change.kind, key=change.key)
            return None
        return change, delivery

    async def _resolve_until_reachable(
        self, msg: Msg, change: Change, resolver: Resolver
    ) -> Delivery | None:
        assert self._lookups is not None
        delay = 0.1
        while True:
            try:
                return await resolver(self._lookups, change)
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "audience lookup failed; retrying",
                    kind=change.kind,
                    key=change.key,
                    error=repr(exc),
                    retry_in_seconds=delay,
                )
            # Keep the change ours while we wait, instead of letting its
            # ack wait run out and another replica fail on it too.
            await msg.in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    async def _publish(
        self, msg: Msg, change: Change, delivery: Delivery, span: Span
    ) -> list[asyncio.Future]:
        assert self._js is not None
        change_id = (msg.headers or {}).get("Nats-Msg-Id") or (
            f"{CHANGES_STREAM}.{msg.metadata.sequence.stream}"
        )
        payload = encode(delivery.data)
        common = span_headers(
            span,
            {
                EVENT_TYPE_HEADER: delivery.event_type,
                COMMIT_TIME_HEADER: f"{change.commit_time.timestamp():.6f}",
            },
        )
        acks = []
        for audience in delivery.audiences:
            ack = await self._js.publish_async(
                event_subject(audience),
                payload,
                headers={**common, "Nats-Msg-Id": f"{change_id}:{audience}"},
            )
            acks.append(ack)
        return acks

    async def _acknowledge(self, item: _Published) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await asyncio.gather(*item.acks)
        except (TimeoutError, NatsError, JetStreamError) as exc:
            await self._retry_later(item.msg, f"events not stored: {exc!r}")
            return
        await item.msg.ack()
        recipients = len(item.delivery.audiences)
        metrics.CHANGES_PROCESSED.labels(item.change.kind).inc()
        metrics.EVENTS_PUBLISHED.labels(item.delivery.event_type).inc(recipients)
        metrics.AUDIENCE_SIZE.observe(recipients)
        log.info(
            "change enriched",
            kind=item.change.kind,
            key=item.change.key,
            change_id=(item.msg.headers or {}).get("Nats-Msg-Id"),
            sequence=item.msg.metadata.sequence.stream,
            event_type=item.delivery.event_type,
            recipients=recipients,
            deliveries=item.msg.metadata.num_delivered,
        )

    async def _retry_later(self, msg: Msg, reason: str) -> None:
        """Redeliver `msg` after a delay, or give it up after the last delivery."""
        assert self._dead_letters is not None
        deliveries = msg.metadata.num_delivered
        if deliveries >= self.settings.enricher_max_deliver:
            await self._dead_letters.give_up(
                msg, f"failed on each of {deliveries} deliveries; last: {reason}"
            )
            return
        delay = min(0.5 * 2 ** (deliveries - 1), MAX_RETRY_DELAY_SECONDS)
        log.warning(
            "change failed; will be redelivered",
            subject=msg.subject,
            deliveries=deliveries,
            retry_in_seconds=delay,
            reason=reason,
        )
        await msg.nak(delay=delay)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one enricher until `stop` is set."""
    enricher = Enricher(settings)
    await enricher.start()
    try:
        await stop.wait()
    finally:
        await enricher.stop()
