"""The SSE endpoint `GET /api/events/stream`, written as a bare ASGI handler.

A bare handler keeps the per-connection cost to one buffer, one event and one
task watching for the client to go away.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import msgspec

from tidings.edge.auth import ApiKeyAuthenticator, Caller
from tidings.edge.hub import Connection, Hub
from tidings.edge.sse import KEEPALIVE, format_retry
from tidings.shared.logs import get_logger
from tidings.shared.settings import Settings
from tidings.shared.subjects import ALL_AUDIENCE, user_audience

log = get_logger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamEndpoint:
    """Authenticates a request and streams its audiences' live events."""

    def __init__(self, settings: Settings, hub: Hub, auth: ApiKeyAuthenticator):
        self.settings = settings
        self.hub = hub
        self.auth = auth
        self.accepting = True

    async def __call__(self, scope, receive, send) -> None:
        if not self.accepting:
            await _send_json(send, 503, {"detail": "edge is shutting down; retry"})
            return
        caller = await self._authenticate(scope)
        if caller is None:
            await _send_json(
                send,
                401,
                {"detail": "missing or invalid API key (x-api-key header or key=)"},
            )
            return
        connection = Connection(
            [user_audience(caller.user_id), ALL_AUDIENCE], self.settings.queue_size
        )
        await self.hub.attach(connection)
        watcher = asyncio.create_task(_close_on_disconnect(receive, connection))
        log.info("stream opened", user_id=caller.user_id)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": STREAM_HEADERS,
                }
            )
            await self._write(send, connection)
        except OSError:
            pass
        finally:
            watcher.cancel()
            await self.hub.detach(connection)
            log.info(
                "stream closed", user_id=caller.user_id, slow=connection.overflowed
            )

    async def _authenticate(self, scope) -> Caller | None:
        key = ""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1")
        if not key:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            key = query.get("key", [""])[0]
        return await self.auth.authenticate(key)

    async def _write(self, send, connection: Connection) -> None:
        await _send_body(send, format_retry(self.settings.retry_ms))
        keepalive = self.settings.keepalive_seconds
        while not connection.closed:
            try:
                async with asyncio.timeout(keepalive):
                    await connection.wakeup.wait()
            except TimeoutError:
                body = KEEPALIVE
            else:
                body = connection.take()
            if body and not connection.closed:
                await send(
                    {"type": "http.response.body", "body": body, "more_body": True}
                )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_body(send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _close_on_disconnect(receive, connection: Connection) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            connection.close()
            return


async def _send_json(send, status: int, body: dict) -> None:
    payload = msgspec.json.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
