"""Bridge service: publish every committed change to `TIDINGS_CHANGES`, once in effect.

Bridges of one database elect a leader through a Postgres advisory lock
(leader.py); the others wait as standbys. The leader:

1. LISTENs on the trigger channels once a NOTIFY round trip has shown that
   notifications get through, or polls the audit tables when configured to
   or when they do not (listener.py, catchup.py);
2. catches up from the watermark of what the stream stores (catchup.py), and
   again whenever NATS comes back;
3. coalesces repeated changes of a key and publishes each change with a
   `Nats-Msg-Id` derived from its audit row (relay.py, coalesce.py,
   publisher.py);
4. publishes scheduled notifications when they come due (scheduler.py) and
   prunes published audit rows (retention.py).

When the lock connection dies, the leader stops all of that, reconnects with
backoff and competes for the lock again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from tidings.bridge import metrics
from tidings.bridge.audit import ChangeKey
from tidings.bridge.catchup import AuditScanner, start_of_scan
from tidings.bridge.health import bridge_health_app
from tidings.bridge.leader import (
    APPLICATION_NAME,
    LeadershipLostError,
    Lease,
    acquire_leadership,
)
from tidings.bridge.listener import (
    ListenUnavailableError,
    check_listen,
    listen_for_changes,
)
from tidings.bridge.publisher import Publisher, change_msg_id
from tidings.bridge.relay import Relay
from tidings.bridge.retention import Retention
from tidings.bridge.retry import DATABASE_ERRORS, Backoff
from tidings.bridge.scheduler import Scheduler
from tidings.shared.db import asyncpg_dsn
from tidings.shared.errors import BridgeError
from tidings.shared.http import HttpServer
from tidings.shared.logs import get_logger
from tidings.shared.nats import connect_nats, ensure_streams
from tidings.shared.settings import Settings

log = get_logger(__name__)


@dataclass
class _Leading:
    """Tasks of the leader while it holds the lock."""

    relay: Relay
    scanner: AuditScanner
    scheduler: Scheduler
    retention: Retention
    offer: Callable[[ChangeKey], None]


class Bridge:
    """One bridge process: leader or standby, with its health endpoints."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.role = "connecting"
        self.mode: str | None = None
        self._dsn = ""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self._leading: _Leading | None = None
        self._task: asyncio.Task | None = None
        self._started: asyncio.Future[None] | None = None
        self._listen_sessions = 0
        self._http = HttpServer(
            bridge_health_app(self.status, self.is_ready),
            settings.host,
            settings.bridge_port,
        )

    async def start(self) -> None:
        """Connect, and return once this bridge is the leader or a standby.

        Raises `BridgeError` when Postgres cannot be reached, or when
        `TIDINGS_BRIDGE_MODE=listen` and LISTEN does not hear a NOTIFY.
        """
        self._dsn = asyncpg_dsn(self.settings.database_url)
        self._nc = await connect_nats(
            self.settings, "bridge", reconnected=self._after_nats_reconnect
        )
        self._js = self._nc.jetstream()
        await ensure_streams(self._js, self.settings)
        self._publisher = Publisher(self._js)
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run())
        try:
            await self._started
            await self._http.start()
        except BaseException:
            await self.stop()
            raise
        log.info("bridge started", role=self.role, mode=self.mode)

    async def stop(self) -> None:
        """Stop leading or waiting, release the lock and close every connection."""
        try:
            await self._http.stop()
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.drain()
            log.info("bridge stopped")

    def is_ready(self) -> bool:
        """Whether NATS is connected and the bridge is the leader or a standby."""
        connected = self._nc is not None and self._nc.is_connected
        return connected and self.role in ("leader", "standby")

    def status(self) -> dict[str, object]:
        """Role, feed and counters, as the health endpoints report them."""
        publisher = self._publisher
        leading = self._leading
        return {
            "role": self.role,
            "mode": self.mode,
            "published": publisher.stored if publisher else 0,
            "duplicates": publisher.duplicates if publisher else 0,
            "backlog": leading.relay.backlog if leading else 0,
            "coalescing": leading.relay.coalescing if leading else 0,
        }

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                lease = await acquire_leadership(
                    self._dsn, self.settings.bridge_lease_seconds, self._on_standby
                )
            except Exception as exc:
                # Any failure here, a refused password as much as a refused
                # connection, means Postgres cannot be used yet.
                error = BridgeError(f"cannot connect to Postgres: {_describe(exc)}")
                if self._settle(error):
                    return
                log.warning("connecting to Postgres failed; retrying", error=str(error))
                await backoff.sleep()
                continue
            try:
                await self._lead(lease)
            except ListenUnavailableError as exc:
                if self._settle(exc):
                    return
                log.error("LISTEN unavailable; retrying", error=str(exc))
            except (LeadershipLostError, *DATABASE_ERRORS) as exc:
                log.warning("leadership lost", error=_describe(exc))
            except Exception as exc:
                # A failed session must not end the bridge: it starts again.
                if self._settle(BridgeError(f"leading failed: {_describe(exc)}")):
                    return
                log.exception("leader session failed")
            finally:
                if self.role == "leader":
                    backoff.reset()
                self.role, self.mode = "connecting", None
                await lease.release()
            await backoff.sleep()

    async def _lead(self, lease: Lease) -> None:
        settings = self.settings
        assert self._js is not None and self._publisher is not None
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=4,
            server_settings={"application_name": APPLICATION_NAME},
        )
        try:
            leading = await self._prepare(pool)
            mode = await self._open_feed(lease, pool, leading)
            # NOTE: a leader that reaches Postgres but not NATS keeps the lock
            # and retries its publishes; it does not hand over to a standby.
            self._leading, self.role, self.mode = leading, "leader", mode
            log.info("bridge is leader", mode=mode)
            self._settle()
            self._count_session(mode, leading)
            poll_interval = settings.bridge_poll_interval_seconds
            await _run_until_one_fails(
                lease.hold(),
                leading.relay.run(),
                leading.scanner.run(poll_interval if mode == "poll" else None),
                leading.scheduler.run(),
                leading.retention.run(),
            )
        finally:
            self._leading = None
            metrics.LEADER.set(0)
            metrics.OLDEST_UNPUBLISHED_SECONDS.set_function(lambda: 0.0)
            pool.terminate()

    async def _prepare(self, pool: asyncpg.Pool) -> _Leading:
        settings = self.settings
        assert self._js is not None and self._publisher is not None
        overlap = settings.bridge_overlap_seconds
        since, watermark = await start_of_scan(
            pool, self._js, overlap, settings.changes_max_age_seconds
        )
        relay = Relay(pool, self._publisher, settings.bridge_coalesce_ms / 1000)
        scheduler = Scheduler(pool, self._js, self._publisher, since, watermark)

        def offer(key: ChangeKey) -> None:
            relay.offer(key)
            if key[0] == "notification":
                # The notification may be scheduled for later.
                scheduler.poke()

        scanner = AuditScanner(
            pool, self._js, offer, overlap, settings.changes_max_age_seconds
        )
        retention = Retention(
            pool, self._js, settings.bridge_audit_retention_seconds, overlap
        )
        return _Leading(relay, scanner, scheduler, retention, offer)

    async def _open_feed(
        self, lease: Lease, pool: asyncpg.Pool, leading: _Leading
    ) -> str:
        mode = self.settings.bridge_mode
        if mode == "poll":
            return "poll"
        try:
            await check_listen(lease, pool)
        except ListenUnavailableError as exc:
            if mode == "listen":
                raise
            log.warning("polling, because LISTEN is unavailable", error=str(exc))
            return "poll"
        await listen_for_changes(lease.conn, leading.offer)
        return "listen"

    def _count_session(self, mode: str, leading: _Leading) -> None:
        metrics.LEADER.set(1)
        # NOTE: this is how long the oldest waiting change has been known to
        # the bridge, which is shorter than its audit row's age after a gap.
        metrics.OLDEST_UNPUBLISHED_SECONDS.set_function(
            leading.relay.oldest_wait_seconds
        )
        if mode == "listen":
            if self._listen_sessions:
                metrics.LISTEN_RECONNECTS.inc()
            self._listen_sessions += 1

    def _on_standby(self) -> None:
        self.role, self.mode = "standby", None
        log.info("bridge is standby: another bridge holds the lock")
        self._settle()

    def _settle(self, error: BaseException | None = None) -> bool:
        """Resolve `start()` once; return whether `error` was what resolved it."""
        if self._started is None or self._started.done():
            return False
        if error is None:
            self._started.set_result(None)
            return False
        self._started.set_exception(error)
        return True

    async def _after_nats_reconnect(self) -> None:
        if self._leading is not None:
            # The server may have lost the tail of the stream.
            self._leading.scanner.request_catch_up()


async def _run_until_one_fails(*coroutines: Coroutine) -> None:
    """Run the coroutines together until one ends; cancel the rest and re-raise."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one bridge until `stop` is set."""
    bridge = Bridge(settings)
    await bridge.start()
    try:
        await stop.wait()
    finally:
        await bridge.stop()


__all__ = ["Bridge", "change_msg_id", "main"]
