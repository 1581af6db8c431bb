"""Leadership: one active bridge per database, through a session advisory lock.

The lock lives on a dedicated connection, which is also the one that LISTENs.
Postgres releases the lock when that session ends, so when the leader is
killed or its connection breaks, a standby that retries the lock every
quarter lease takes over. A leader cut off by a half-open TCP connection is
ended by the server itself. The leader sets `idle_session_timeout` to the
lease on its session (Postgres 14 and later) and sends a keepalive query every
quarter lease, so only a silent leader is timed out. The same keepalive shows
the leader promptly that its connection is dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from tidings.bridge.retry import DATABASE_ERRORS
from tidings.shared.errors import BridgeError
from tidings.shared.logs import get_logger

log = get_logger(__name__)

# Key of the advisory lock, the same in every bridge: "tidings" in ASCII.
LOCK_KEY = 0x74696469_6E6773
APPLICATION_NAME = "tidings-bridge"


class LeadershipLostError(BridgeError):
    """The lock connection ended or stopped responding, so the lock is gone."""


class Lease:
    """The lock connection of the active bridge."""

    def __init__(self, conn: asyncpg.Connection, lease_seconds: float):
        self.conn = conn
        self._lease_seconds = lease_seconds
        self._ended = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self._ended.set())

    async def hold(self) -> None:
        """Send keepalives; raise `LeadershipLostError` once the connection dies."""
        while True:
            try:
                await asyncio.wait_for(self._ended.wait(), self.keepalive_interval)
            except TimeoutError:
                pass
            else:
                raise LeadershipLostError("the lock connection was closed")
            try:
                await self.keepalive()
            except DATABASE_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
                raise LeadershipLostError(f"keepalive failed: {reason}") from exc

    async def release(self) -> None:
        """Close the lock connection, which releases the lock."""
        try:
            await asyncio.wait_for(self.conn.close(), self._lease_seconds / 2)
        except DATABASE_ERRORS:
            self.conn.terminate()
        except asyncio.CancelledError:
            self.conn.terminate()
            raise

    async def keepalive(self) -> None:
        """Send one keepalive query, for a caller that waits on this connection."""
        await asyncio.wait_for(self.conn.fetchval("SELECT 1"), self._lease_seconds / 2)

    @property
    def keepalive_interval(self) -> float:
        """Seconds between keepalive queries."""
        return self._lease_seconds / 4


async def acquire_leadership(
    dsn: str, lease_seconds: float, on_standby: Callable[[], None]
) -> Lease:
    """Wait until this bridge holds the lock, and return its lease.

    Calls `on_standby` once when another bridge holds the lock. Raises one of
    `DATABASE_ERRORS` when the connection fails; the caller retries.
    """
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": APPLICATION_NAME}
    )
    try:
        await _set_server_lease(conn, lease_seconds)
        standby = False
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            if not standby:
                standby = True
                on_standby()
            await asyncio.sleep(lease_seconds / 4)
    except BaseException:
        conn.terminate()
        raise
    return Lease(conn, lease_seconds)


async def _set_server_lease(conn: asyncpg.Connection, lease_seconds: float) -> None:
    milliseconds = max(1, round(lease_seconds * 1000))
    try:
        await conn.execute(f"SET idle_session_timeout = {milliseconds}")
    except asyncpg.exceptions.UndefinedObjectError:
        log.warning(
            "idle_session_timeout needs Postgres 14 or later; a leader cut off "
            "by a half-open connection keeps the lock until TCP gives up"
        )
