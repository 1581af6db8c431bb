"""Keeping changes the enricher gave up on, with the reason, in `TIDINGS_DEAD_LETTERS`.

A dead letter keeps the change's data unchanged, on `tidings.dead.change.…`,
with headers saying where it came from and why it was given up. An operator
can read the stream, fix the cause and publish the data again to its
original subject.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tidings.enricher import metrics
from tidings.shared.logs import get_logger
from tidings.shared.subjects import dead_letter_subject

log = get_logger(__name__)

REASON_HEADER = "Tidings-Dead-Reason"
SUBJECT_HEADER = "Tidings-Dead-Subject"
SEQUENCE_HEADER = "Tidings-Dead-Sequence"
DELIVERIES_HEADER = "Tidings-Dead-Deliveries"
# Header values are one line each.
_MAX_REASON_LENGTH = 1000


class DeadLetters:
    """Publishes dead letters and terminates the change's delivery."""

    def __init__(self, js: JetStreamContext):
        self._js = js

    async def give_up(self, msg: Msg, reason: str) -> None:
        """Store `msg` as a dead letter, then stop its redelivery."""
        metadata = msg.metadata
        deliveries = metadata.num_delivered
        sequence = metadata.sequence.stream
        headers = {
            REASON_HEADER: " ".join(reason.split())[:_MAX_REASON_LENGTH],
            SUBJECT_HEADER: msg.subject,
            SEQUENCE_HEADER: str(sequence),
            DELIVERIES_HEADER: str(deliveries),
        }
        # The same change given up twice, after a crash between publishing and
        # terminating, is stored once.
        change_id = (msg.headers or {}).get(
            "Nats-Msg-Id"
        ) or f"{msg.subject}.{sequence}"
        headers["Nats-Msg-Id"] = f"dead:{change_id}"
        subject = dead_letter_subject(msg.subject)
        await self._js.publish(subject, msg.data, headers=headers)
        await msg.term()
        metrics.DEAD_LETTERED.inc()
        log.error(
            "change given up",
            subject=msg.subject,
            sequence=sequence,
            deliveries=deliveries,
            reason=reason,
        )
