"""Live fan-out: one core NATS subscription per audience, shared by its connections.

Each open SSE stream registers a `Connection` for its audiences. The hub keeps
one subscription per audience subject in use, reference counted, and hands
each message to every connection of that audience without awaiting any of
them, so one slow socket never delays the others.
"""

from __future__ import annotations

import asyncio
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidings.edge.sse import FramingError, format_event
from tidings.shared.logs import get_logger
from tidings.shared.subjects import EVENT_TYPE_HEADER, LIVE_PREFIX, live_subject

log = get_logger(__name__)


class Connection:
    """The outbound side of one SSE stream: a bounded buffer of encoded frames."""

    __slots__ = ("audiences", "closed", "frames", "limit", "overflowed", "wakeup")

    def __init__(self, audiences: list[str], limit: int):
        self.audiences = audiences
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def offer(self, frame: bytes) -> None:
        """Queue a frame; a connection that falls `limit` frames behind is closed."""
        if self.closed:
            return
        if len(self.frames) >= self.limit:
            self.overflowed = True
            self.close()
            return
        self.frames.append(frame)
        self.wakeup.set()

    def close(self) -> None:
        """Ask the writer to end the stream."""
        self.closed = True
        self.wakeup.set()

    def take(self) -> bytes:
        """Remove and return every queued frame as one chunk."""
        chunk = b"".join(self.frames)
        self.frames.clear()
        self.wakeup.clear()
        return chunk


class Hub:
    """Subscriptions of one edge process, shared across its connections."""

    def __init__(self, nc: Client, epoch: str):
        self._nc = nc
        self.epoch = epoch
        self._members: dict[str, set[Connection]] = {}
        self._subscriptions: dict[str, Subscription] = {}

    @property
    def subscription_count(self) -> int:
        """Number of audience subjects subscribed to right now."""
        return len(self._subscriptions)

    @property
    def connection_count(self) -> int:
        """Number of connections registered right now."""
        return len({c for members in self._members.values() for c in members})

    async def attach(self, connection: Connection) -> None:
        """Start delivering the live events of the connection's audiences to it."""
        for audience in connection.audiences:
            members = self._members.setdefault(audience, set())
            members.add(connection)
            if audience not in self._subscriptions:
                self._subscriptions[audience] = await self._nc.subscribe(
                    live_subject(audience), cb=self._deliver
                )
                # The server must know the subscription before the stream
                # starts, or an event published right after could miss it.
                await self._nc.flush()

    async def detach(self, connection: Connection) -> None:
        """Stop delivering to the connection; drop subscriptions nobody needs."""
        for audience in connection.audiences:
            members = self._members.get(audience)
            if members is None:
                continue
            members.discard(connection)
            if not members:
                del self._members[audience]
                subscription = self._subscriptions.pop(audience, None)
                if subscription is not None:
                    await subscription.unsubscribe()

    def close_all(self) -> None:
        """Ask every open stream to end."""
        for members in self._members.values():
            for connection in members:
                connection.close()

    async def _deliver(self, msg: Msg) -> None:
        audience = msg.subject[len(LIVE_PREFIX) + 1 :]
        members = self._members.get(audience)
        if not members:
            return
        try:
            frame = self._frame(msg)
        except (FramingError, KeyError) as exc:
            log.error("live message dropped", subject=msg.subject, error=str(exc))
            return
        for connection in list(members):
            connection.offer(frame)

    def _frame(self, msg: Msg) -> bytes:
        headers = msg.headers or {}
        event_type = headers[EVENT_TYPE_HEADER]
        sequence = headers["Nats-Sequence"]
        return format_event(event_type, msg.data, f"{self.epoch}.{sequence}")
