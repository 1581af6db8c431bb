"""Publishing changes to `TIDINGS_CHANGES`, many in flight at once.

Every message carries a `Nats-Msg-Id` derived from the audit row it reports.
JetStream therefore stores a change published twice only once, provided both
copies arrive within the stream's duplicate window. A retry publishes twice,
and so do an old leader's last act and a new leader's catch-up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from opentelemetry.trace import Span, Status, StatusCode

from tidings.bridge import metrics
from tidings.shared.events import Change, encode
from tidings.shared.subjects import change_subject
from tidings.shared.telemetry import get_tracer, span_headers, start_span

ACK_TIMEOUT_SECONDS = 5.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

tracer = get_tracer(__name__)


def change_msg_id(change: Change) -> str:
    """`Nats-Msg-Id` of a change: its kind, key and audit time in microseconds."""
    micros = (change.commit_time - _EPOCH) // timedelta(microseconds=1)
    return f"{change.kind}.{change.key}.{micros}"


def due_msg_id(change: Change) -> str:
    """`Nats-Msg-Id` of a notification's change at its publication time.

    It differs from the id of the change that inserted the notification, so
    JetStream does not drop it as a duplicate of that one.
    """
    return f"{change_msg_id(change)}.due"


class Publisher:
    """Publishes batches of changes and counts what JetStream stored."""

    def __init__(self, js: JetStreamContext):
        self._js = js
        self.stored = 0
        self.duplicates = 0

    async def publish(self, messages: list[tuple[Change, str]]) -> list[Change]:
        """Publish (change, msg id) pairs; return the changes JetStream did not ack.

        The messages are sent back to back and acknowledged together, so a
        batch costs about one round trip. A caller retries what is returned.
        """
        pending: dict[asyncio.Future, tuple[Change, Span]] = {}
        unsent: list[Change] = []
        for index, (change, msg_id) in enumerate(messages):
            # Each change starts its own trace, continued by the enricher and
            # the edge through the `traceparent` header.
            span = start_span(
                tracer,
                "bridge publish change",
                attributes={
                    "tidings.change.kind": change.kind,
                    "tidings.change.key": change.key,
                    "tidings.change.commit_time": change.commit_time.isoformat(),
                },
            )
            try:
                future = await self._js.publish_async(
                    change_subject(change.kind, change.key),
                    encode(change),
                    headers=span_headers(span, {"Nats-Msg-Id": msg_id}),
                )
            except NatsError as exc:
                _end_failed(span, exc)
                unsent = [change for change, _ in messages[index:]]
                break
            pending[future] = (change, span)
        if not pending:
            return unsent

        done, late = await asyncio.wait(pending, timeout=ACK_TIMEOUT_SECONDS)
        failed = []
        for future in late:
            future.cancel()
            change, span = pending[future]
            _end_failed(span, TimeoutError("no acknowledgement from JetStream"))
            failed.append(change)
        for future in done:
            change, span = pending[future]
            error = future.exception()
            if error is not None:
                _end_failed(span, error)
                failed.append(change)
                continue
            ack = future.result()
            span.set_attribute("messaging.nats.sequence", ack.seq)
            span.end()
            metrics.CHANGES_PUBLISHED.inc()
            if ack.duplicate:
                self.duplicates += 1
                metrics.CHANGES_DUPLICATE.inc()
            else:
                self.stored += 1
        return failed + unsent


def _end_failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    span.end()
