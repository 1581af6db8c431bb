"""Bridge service: LISTEN on the trigger channels, publish each change to JetStream.

Each notification names a changed row by id only. The bridge reads the audit
row that the same trigger wrote, so the change carries its commit time and a
`Nats-Msg-Id` derived from that row: a change published twice is stored once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from tidings.shared.db import asyncpg_dsn
from tidings.shared.events import Change, encode
from tidings.shared.http import HttpServer, health_app
from tidings.shared.logs import get_logger
from tidings.shared.nats import connect_nats, ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import change_subject
from tidings.shared.triggers import CHANGE_CHANNEL, HISTORY_CHANNEL

log = get_logger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_HISTORY_AUDIT_TIME = "SELECT max(update_time) FROM history_audit WHERE history_id = $1"
_CHANGE_AUDIT_TIME = (
    "SELECT max(change_time) FROM tidings_change_audit WHERE kind = $1 AND key = $2"
)


class Bridge:
    """One bridge process: a LISTEN connection, a query connection, a NATS client."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._notifications: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._listen: asyncpg.Connection | None = None
        self._query: asyncpg.Connection | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task | None = None
        self._http = HttpServer(
            health_app(self.is_ready), settings.host, settings.bridge_port
        )

    async def start(self) -> None:
        """Connect, declare the streams, LISTEN, and start publishing."""
        self._nc = await connect_nats(self.settings, "bridge")
        self._js = self._nc.jetstream()
        await ensure_streams(self._js, self.settings)
        dsn = asyncpg_dsn(self.settings.database_url)
        self._query = await asyncpg.connect(dsn)
        self._listen = await asyncpg.connect(dsn)
        await self._listen.add_listener(HISTORY_CHANNEL, self._on_notify)
        await self._listen.add_listener(CHANGE_CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._publish_loop())
        await self._http.start()
        log.info("bridge started", channels=[HISTORY_CHANNEL, CHANGE_CHANNEL])

    async def stop(self) -> None:
        """Stop publishing and close every connection."""
        await self._http.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for conn in (self._listen, self._query):
            if conn is not None:
                await conn.close()
        if self._nc is not None:
            await self._nc.drain()
        log.info("bridge stopped")

    def is_ready(self) -> bool:
        """Whether both the LISTEN connection and NATS are usable."""
        listening = self._listen is not None and not self._listen.is_closed()
        return listening and self._nc is not None and self._nc.is_connected

    def _on_notify(self, _conn, _pid: int, channel: str, payload: str) -> None:
        self._notifications.put_nowait((channel, payload))

    async def _publish_loop(self) -> None:
        while True:
            channel, payload = await self._notifications.get()
            try:
                change = await self._read_change(channel, payload)
            except ValueError as exc:
                log.warning("ignored notification", channel=channel, error=str(exc))
                continue
            if change is not None:
                await self._publish(change)

    async def _read_change(self, channel: str, payload: str) -> Change | None:
        assert self._query is not None
        if channel == HISTORY_CHANNEL:
            kind, key = "history", payload
            commit_time = await self._query.fetchval(_HISTORY_AUDIT_TIME, int(key))
        else:
            kind, sep, key = payload.partition(":")
            if not sep:
                raise ValueError(f"payload {payload!r} is not <kind>:<key>")
            commit_time = await self._query.fetchval(_CHANGE_AUDIT_TIME, kind, key)
        if commit_time is None:
            log.warning("notification without audit row", kind=kind, key=key)
            return None
        return Change(kind=kind, key=key, commit_time=commit_time.replace(tzinfo=UTC))

    async def _publish(self, change: Change) -> None:
        assert self._js is not None
        msg_id = change_msg_id(change)
        ack = await self._js.publish(
            change_subject(change.kind, change.key),
            encode(change),
            headers={"Nats-Msg-Id": msg_id},
        )
        log.debug(
            "change published",
            msg_id=msg_id,
            seq=ack.seq,
            duplicate=bool(ack.duplicate),
        )


def change_msg_id(change: Change) -> str:
    """`Nats-Msg-Id` of a change: its kind, key and audit time in microseconds."""
    micros = (change.commit_time - _EPOCH) // timedelta(microseconds=1)
    return f"{change.kind}.{change.key}.{micros}"


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one bridge until `stop` is set."""
    bridge = Bridge(settings)
    await bridge.start()
    try:
        await stop.wait()
    finally:
        await bridge.stop()


__all__ = ["Bridge", "change_msg_id", "main"]
