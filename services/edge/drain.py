"""Ending every stream on shutdown, spread over a window.

Ending all streams at once would send every client back at the same moment,
to whichever edge is left. Spreading the ends over `TIDINGS_DRAIN_SECONDS`
spreads the reconnections too. Each client reconnects after its `retry:`
delay with its `Last-Event-ID`, so it misses nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from tidings.edge.connection import SseConnection
from tidings.shared.logs import get_logger

log = get_logger(__name__)

# Streams are ended in batches this far apart, so a long window with many
# streams does not mean one timer per stream.
_BATCH_INTERVAL_SECONDS = 0.05
# How long closed streams may take to flush before their sockets are dropped.
_FLUSH_GRACE_SECONDS = 2.0


async def drain_streams(
    streams: Callable[[], set[SseConnection]], window_seconds: float
) -> None:
    """End every stream in `streams()`, spread evenly over `window_seconds`."""
    started = time.monotonic()
    pending = sorted(streams(), key=id)
    total = len(pending)
    if total:
        batches = max(1, math.floor(window_seconds / _BATCH_INTERVAL_SECONDS))
        size = math.ceil(total / batches)
        interval = window_seconds / math.ceil(total / size)
        for start in range(0, total, size):
            for connection in pending[start : start + size]:
                connection.end()
            if start + size < total:
                await asyncio.sleep(interval)
    await _drop_unflushed(streams)
    log.info("streams drained", streams=total, seconds=time.monotonic() - started)


async def _drop_unflushed(streams: Callable[[], set[SseConnection]]) -> None:
    # Streams opened while draining, and clients that do not read what is
    # left in their buffers, are dropped after a short grace.
    deadline = time.monotonic() + _FLUSH_GRACE_SECONDS
    while streams() and time.monotonic() < deadline:
        for connection in streams():
            connection.end()
        await asyncio.sleep(_BATCH_INTERVAL_SECONDS)
    for connection in streams():
        connection.cut("shutdown")
