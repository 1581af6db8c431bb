"""LISTEN on the trigger channels, after proving that a NOTIFY gets through.

Behind a transaction-mode pooler a LISTEN succeeds but never hears anything,
because the server connection that ran it goes back to the pool. So before
relying on LISTEN, the bridge sends a NOTIFY with a random token from another
connection and waits to hear it on the LISTEN connection.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import asyncpg

from tidings.bridge import metrics
from tidings.bridge.audit import HISTORY_KIND, ChangeKey
from tidings.bridge.leader import Lease
from tidings.shared.errors import BridgeError
from tidings.shared.logs import get_logger
from tidings.shared.triggers import CHANGE_CHANNEL, HISTORY_CHANNEL

log = get_logger(__name__)

SELF_TEST_CHANNEL = "tidings_bridge_self_test"
SELF_TEST_TIMEOUT_SECONDS = 5.0


class ListenUnavailableError(BridgeError):
    """A NOTIFY sent to Postgres never reached the bridge's LISTEN connection."""


async def check_listen(
    lease: Lease,
    notify: asyncpg.Pool | asyncpg.Connection,
    timeout: float = SELF_TEST_TIMEOUT_SECONDS,
) -> None:
    """Raise `ListenUnavailableError` unless a NOTIFY sent through `notify` is heard.

    Keepalives go on while waiting, so the server does not end the lock
    session of a leader that waits longer than its lease.
    """
    token = secrets.token_hex(8)
    heard = asyncio.Event()

    def on_notify(_conn, _pid: int, _channel: str, payload: str) -> None:
        if payload == token:
            heard.set()

    await lease.conn.add_listener(SELF_TEST_CHANNEL, on_notify)
    try:
        await notify.execute("SELECT pg_notify($1, $2)", SELF_TEST_CHANNEL, token)
        await _wait_keeping_alive(lease, heard, timeout)
    finally:
        await lease.conn.remove_listener(SELF_TEST_CHANNEL, on_notify)


async def _wait_keeping_alive(lease: Lease, heard: asyncio.Event, timeout: float):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not heard.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ListenUnavailableError(
                f"LISTEN heard no NOTIFY within {timeout:g} s. A transaction-mode "
                "pooler (such as PgBouncer with pool_mode=transaction) between the "
                "bridge and Postgres drops notifications: point TIDINGS_DATABASE_URL "
                "at Postgres or a session-mode pool, or set TIDINGS_BRIDGE_MODE=poll"
            )
        try:
            await asyncio.wait_for(
                heard.wait(), min(remaining, lease.keepalive_interval)
            )
        except TimeoutError:
            await lease.keepalive()


async def listen_for_changes(
    conn: asyncpg.Connection, offer: Callable[[ChangeKey], None]
) -> None:
    """LISTEN on the trigger channels, offering each notified key."""

    def on_history(_conn, _pid: int, _channel: str, payload: str) -> None:
        # history.id is a Postgres integer (int4).
        if payload.isdigit() and int(payload) < 2**31:
            metrics.CHANGES_RECEIVED.inc()
            offer((HISTORY_KIND, payload))
        else:
            log.warning(
                "notification ignored", channel=HISTORY_CHANNEL, payload=payload
            )

    def on_change(_conn, _pid: int, _channel: str, payload: str) -> None:
        kind, sep, key = payload.partition(":")
        if sep and kind and key:
            metrics.CHANGES_RECEIVED.inc()
            offer((kind, key))
        else:
            log.warning(
                "notification ignored: expected <kind>:<key>",
                channel=CHANGE_CHANNEL,
                payload=payload,
            )

    await conn.add_listener(HISTORY_CHANNEL, on_history)
    await conn.add_listener(CHANGE_CHANNEL, on_change)
