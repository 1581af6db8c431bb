"""Reading what the enricher stored in `TIDINGS_EVENTS`, subject by subject."""

from __future__ import annotations

import json
from dataclasses import dataclass

import nats
from nats.js.errors import NotFoundError

from tidings.shared.subjects import (
    EVENT_PREFIX,
    EVENT_TYPE_HEADER,
    EVENTS_STREAM,
    event_subject,
)


@dataclass(frozen=True)
class StoredEvent:
    """One message of `TIDINGS_EVENTS`."""

    sequence: int
    audience: str
    event_type: str
    data: dict
    msg_id: str

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids the event names (histories, notifications or entry points)."""
        for field in ("history_ids", "notification_ids", "entry_point_ids"):
            if field in self.data:
                return tuple(self.data[field])
        return ()


async def read_events(
    nats_url: str, audience: str = ">", after: int = 0
) -> list[StoredEvent]:
    """Return the stored events of `audience` (all by default) after `after`."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = event_subject(audience)
        events = []
        sequence = after + 1
        while True:
            try:
                msg = await js.get_msg(
                    EVENTS_STREAM, sequence, next=True, subject=subject
                )
            except NotFoundError:
                return events
            headers = msg.headers or {}
            events.append(
                StoredEvent(
                    sequence=msg.seq,
                    audience=msg.subject.removeprefix(f"{EVENT_PREFIX}."),
                    event_type=headers.get(EVENT_TYPE_HEADER, ""),
                    data=json.loads(msg.data),
                    msg_id=headers.get("Nats-Msg-Id", ""),
                )
            )
            sequence = msg.seq + 1
    finally:
        await nc.close()


async def last_sequence(nats_url: str) -> int:
    """The sequence of the last event stored so far, 0 when there is none."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        return info.state.last_seq
    except NotFoundError:
        return 0
    finally:
        await nc.close()
