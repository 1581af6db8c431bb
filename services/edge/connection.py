"""One open SSE stream: the protocol that owns its socket once the head is read.

An idle stream costs this object and its transport, and no task: the hub
writes each frame straight to the transport. When the transport's buffer is
full because the client reads slower than events come, frames wait in a
bounded list. A client that falls `limit` frames behind is cut off. It comes
back with an old id to catch up or be reset. While a stream catches up, live
frames wait in the same bound until the replay is written; past it they are
dropped, and the replay goes on to cover them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from tidings.shared.logs import get_logger

log = get_logger(__name__)


class StreamOwner(Protocol):
    """The owner a connection notifies when its socket goes away."""

    def release(self, connection: SseConnection) -> None: ...


class SseConnection(asyncio.Protocol):
    """The outbound side of one SSE stream, written straight to its transport."""

    __slots__ = (
        "_writable",
        "audiences",
        "closed",
        "cut_reason",
        "events",
        "last_write",
        "limit",
        "opened_at",
        "overflow_through",
        "owner",
        "pending",
        "queued",
        "skip_through",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        audiences: tuple[str, ...],
        limit: int,
        owner: StreamOwner,
    ):
        self.transport = transport
        self.audiences = audiences
        self.limit = limit
        self.owner = owner
        # Live frames at or below this sequence were replayed, or skipped on
        # purpose under an id the stream already sent, so they are dropped.
        self.skip_through = 0
        # Live frames held back while the stream catches up, or None. When
        # more come than `limit`, the rest are dropped and the highest dropped
        # sequence is kept, for the replay to go on past it.
        self.pending: list[tuple[int, bytes]] | None = None
        self.overflow_through = 0
        # Frames waiting for a paused transport, or None.
        self.queued: list[bytes] | None = None
        self.closed = False
        self.cut_reason: str | None = None
        self.events = 0
        self.opened_at = self.last_write = time.monotonic()
        self._writable: asyncio.Future | None = None

    # asyncio.Protocol

    def connection_lost(self, exc: Exception | None) -> None:
        """Release everything the stream holds, at once."""
        self.closed = True
        self.queued = self.pending = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.release(self)

    def pause_writing(self) -> None:
        if self.queued is None:
            self.queued = []

    def resume_writing(self) -> None:
        queued, self.queued = self.queued, None
        if queued:
            self.transport.write(b"".join(queued))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Ignore anything the client sends after its request."""

    # writing

    def write(self, frame: bytes) -> None:
        """Write a frame now, or queue it while the transport is paused."""
        if self.closed:
            return
        self.last_write = time.monotonic()
        queued = self.queued
        if queued is None:
            self.transport.write(frame)
        elif len(queued) < self.limit:
            queued.append(frame)
        else:
            self.cut("slow")

    def offer(self, sequence: int, frame: bytes, now: float) -> None:
        """Deliver a live frame unless it was replayed or skipped already.

        `now` is the `time.monotonic()` of the fan-out, read once for all
        of its streams.
        """
        if sequence <= self.skip_through:
            return
        self.events += 1
        pending = self.pending
        if pending is None:
            if self.queued is None and not self.closed:
                # The common case, kept to one call: a broadcast runs it for
                # every stream of the process.
                self.last_write = now
                self.transport.write(frame)
            else:
                self.write(frame)
        elif len(pending) < self.limit:
            pending.append((sequence, frame))
        else:
            self.overflow_through = max(self.overflow_through, sequence)

    def hold_live(self) -> None:
        """Start holding live frames back while a replay is written."""
        self.pending = []

    def release_live(self, through: int) -> None:
        """Write held live frames after sequence `through`; deliver live again."""
        self.skip_through = max(self.skip_through, through)
        self.overflow_through = 0
        pending, self.pending = self.pending, None
        for sequence, frame in pending or ():
            if sequence > self.skip_through:
                self.write(frame)

    async def writable(self) -> None:
        """Wait until the transport takes writes again (or the stream closed)."""
        while self.queued is not None and not self.closed:
            if self._writable is None or self._writable.done():
                self._writable = asyncio.get_running_loop().create_future()
            await self._writable
        self._writable = None

    # ending

    def cut(self, reason: str) -> None:
        """Drop the connection at once: the client is not reading, or must go."""
        if self.owner is None:
            return  # The socket is gone already.
        self.cut_reason = reason
        self.closed = True
        self.queued = self.pending = None
        self.transport.abort()

    def end(self) -> None:
        """Close the stream after what is buffered is written."""
        if self.closed:
            return
        self.closed = True
        self.queued = self.pending = None
        self.transport.close()
