"""Keepalive comments, so proxies do not cut idle streams.

nginx's `proxy_read_timeout` and the idle timeout of AWS load balancers
both default to 60 s.
"""

from __future__ import annotations

import asyncio
import time

from tidings.edge.connection import SseConnection
from tidings.edge.sse import KEEPALIVE

# Streams written between two yields to the event loop.
_BATCH = 1000


async def send_keepalives(streams: set[SseConnection], interval: float) -> None:
    """Write a comment to every stream that was silent for a whole interval.

    Runs until cancelled, checking four times per interval.
    """
    while True:
        await asyncio.sleep(max(0.05, interval / 4))
        silent_since = time.monotonic() - interval
        for index, connection in enumerate(list(streams)):
            if connection.pending is None and connection.last_write <= silent_since:
                connection.write(KEEPALIVE)
            if index % _BATCH == _BATCH - 1:
                await asyncio.sleep(0)
