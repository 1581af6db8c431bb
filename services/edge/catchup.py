"""Catch-up: deciding whether a `Last-Event-ID` can be honoured, and replaying.

An event id is `<epoch>.<sequence>`. An id can be honoured when it names the
current epoch and a sequence the stream still covers: at or after the
sequence just before its first kept message, and not past its last. Replay
runs an ordered consumer over the caller's subjects from the next sequence
and stops at the message after which nothing more is pending, so whatever is
stored later is left to the live subscription, which was opened first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from tidings.shared.errors import TidingsError
from tidings.shared.subjects import EVENTS_STREAM

REPLAY_IDLE_TIMEOUT_SECONDS = 10.0
_MAX_SEQUENCE_DIGITS = 20


class ResetRequired(TidingsError):
    """A `Last-Event-ID` that cannot be honoured; `reason` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ReplayError(TidingsError):
    """JetStream did not deliver a replay in time."""


def resume_after(
    last_event_id: str, epoch: str, first_sequence: int, last_sequence: int
) -> int:
    """Return the sequence to replay after, or raise `ResetRequired`.

    `first_sequence` and `last_sequence` describe `TIDINGS_EVENTS` now; an
    empty stream has `first_sequence == last_sequence + 1`.
    """
    shown = repr(last_event_id[:80])
    epoch_part, dot, sequence_part = last_event_id.partition(".")
    well_formed = (
        dot
        and sequence_part.isascii()
        and sequence_part.isdigit()
        and len(sequence_part) <= _MAX_SEQUENCE_DIGITS
    )
    if not well_formed:
        raise ResetRequired(
            "invalid", f"Last-Event-ID {shown} is not an event id of this server"
        )
    if epoch_part != epoch:
        raise ResetRequired(
            "epoch",
            f"Last-Event-ID {shown} is from another epoch of the event stream "
            f"(now {epoch}); it was recreated since",
        )
    sequence = int(sequence_part)
    if sequence > last_sequence:
        raise ResetRequired(
            "ahead",
            f"Last-Event-ID {shown} is ahead of the event stream, "
            f"whose last sequence is {last_sequence}",
        )
    if sequence < first_sequence - 1:
        raise ResetRequired(
            "expired",
            f"Last-Event-ID {shown} is older than the event stream keeps "
            f"(its oldest sequence is {first_sequence})",
        )
    return sequence


async def replay(
    js: JetStreamContext, subjects: list[str], after: int
) -> AsyncIterator[Msg]:
    """Yield the stored messages of `subjects` after sequence `after`, in order.

    Stops once JetStream reports nothing more pending, and raises
    `ReplayError` when a message does not arrive within
    `REPLAY_IDLE_TIMEOUT_SECONDS`.
    """
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=after + 1,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )
    subscription = await js.subscribe(
        subjects[0], stream=EVENTS_STREAM, ordered_consumer=True, config=config
    )
    try:
        info = await subscription.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if not info.num_pending and not delivered:
            return
        while True:
            try:
                msg = await subscription.next_msg(timeout=REPLAY_IDLE_TIMEOUT_SECONDS)
            except nats.errors.TimeoutError:
                raise ReplayError(
                    f"replay of {subjects} after {after} stalled for "
                    f"{REPLAY_IDLE_TIMEOUT_SECONDS} s"
                ) from None
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        try:
            await subscription.unsubscribe()
        except nats.errors.Error:
            pass  # The connection is gone, so the server drops the consumer.
