"""The naive SSE server the edge is measured against.

Litestar's `ServerSentEvent` response over an async generator, one
`asyncio.Queue` per connection, and a fan-out loop that puts every message
of the live subject `tidings.live.all` into every queue. Run it as
`python -m bench.naive_sse PORT NATS_URL`; it serves `GET /stream`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import nats
import uvicorn
from litestar import Litestar, get
from litestar.response import ServerSentEvent

from tidings.shared.subjects import ALL_AUDIENCE, live_subject

_queues: set[asyncio.Queue[str]] = set()
_nats: list = []


@get("/stream")
async def stream() -> ServerSentEvent:
    """Stream whatever the fan-out loop puts into this connection's queue."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    _queues.add(queue)

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                yield await queue.get()
        finally:
            _queues.discard(queue)

    return ServerSentEvent(events(), retry_duration=3000)


async def _fan_out(msg) -> None:
    data = msg.data.decode()
    for queue in list(_queues):
        queue.put_nowait(data)


async def _connect_nats(app: Litestar) -> None:
    nc = await nats.connect(app.state.nats_url)
    await nc.subscribe(live_subject(ALL_AUDIENCE), cb=_fan_out)
    _nats.append(nc)


async def _close_nats(app: Litestar) -> None:
    for nc in _nats:
        await nc.close()


def main() -> None:
    """Serve the naive SSE app on the given port until interrupted."""
    port, nats_url = int(sys.argv[1]), sys.argv[2]
    app = Litestar(
        [stream],
        on_startup=[_connect_nats],
        on_shutdown=[_close_nats],
        openapi_config=None,
        logging_config=None,
    )
    app.state.nats_url = nats_url
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
