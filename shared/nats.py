"""Connecting to NATS and declaring the two JetStream streams."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from tidings.shared.logs import get_logger
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGES_STREAM,
    EVENTS_STREAM,
    changes_stream_config,
    events_stream_config,
)

log = get_logger(__name__)

ERROR_LOG_INTERVAL_SECONDS = 10.0


async def connect_nats(
    settings: Settings,
    name: str,
    *,
    disconnected: Callable[[], Awaitable[None]] | None = None,
    reconnected: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect to NATS, retrying forever when the server goes away later.

    `disconnected` and `reconnected`, when given, are awaited after the
    connection is lost and after it is back with every subscription renewed.
    """

    async def on_disconnect() -> None:
        log.warning("nats disconnected", client=name)
        if disconnected is not None:
            await disconnected()

    async def on_reconnect() -> None:
        log.info("nats reconnected", client=name)
        if reconnected is not None:
            await reconnected()

    last_error_log = 0.0
    suppressed = 0

    async def on_error(exc: Exception) -> None:
        # While the server is away every reconnect attempt fails: log at most
        # one line per interval, with the number of errors left out.
        nonlocal last_error_log, suppressed
        now = time.monotonic()
        if now - last_error_log < ERROR_LOG_INTERVAL_SECONDS:
            suppressed += 1
            return
        log.warning("nats error", client=name, error=str(exc), suppressed=suppressed)
        last_error_log, suppressed = now, 0

    return await nats.connect(
        settings.nats_url,
        name=f"tidings-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create the stream, or update it to this configuration; safe to repeat."""
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        return await js.add_stream(config)
    return await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Declare `TIDINGS_CHANGES` and `TIDINGS_EVENTS`."""
    await ensure_stream(js, changes_stream_config(settings))
    await ensure_stream(js, events_stream_config(settings))


def stream_epoch(info: StreamInfo) -> str:
    """Short token that changes whenever the stream is recreated.

    It is derived from the stream's creation time, which JetStream keeps for
    the life of the stream and changes when the stream is deleted and added.
    """
    created = str(info.created or "")
    return hashlib.sha256(created.encode()).hexdigest()[:8]


__all__ = [
    "CHANGES_STREAM",
    "EVENTS_STREAM",
    "connect_nats",
    "ensure_stream",
    "ensure_streams",
    "stream_epoch",
]
