"""The bridge publishes every committed change once in effect, whatever happens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC

import asyncpg
import httpx
import nats
import pytest
from prometheus_client import REGISTRY

from tests.bridge_support import (
    ChangeLog,
    audit_times,
    metric_value,
    wait_for_audit_times,
    wait_until,
)
from tests.conftest import Servers, create_history, create_user
from tidings.bridge.leader import APPLICATION_NAME, Lease
from tidings.bridge.listener import ListenUnavailableError, check_listen
from tidings.bridge.retention import Retention
from tidings.bridge.service import Bridge
from tidings.shared.embedded import free_port
from tidings.shared.errors import BridgeError, ConfigurationError
from tidings.shared.settings import Settings, load_settings

StartBridge = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def changes(servers: Servers) -> AsyncIterator[ChangeLog]:
    """Reader of `TIDINGS_CHANGES` on the session's NATS."""
    nc = await nats.connect(servers.nats_url)
    yield ChangeLog(nc.jetstream())
    await nc.close()


@pytest.fixture
async def start_bridge(
    settings: Settings, db: asyncpg.Pool
) -> AsyncIterator[StartBridge]:
    """Start in-process bridges with some settings changed; stop them afterwards."""
    started: list[Bridge] = []

    async def start(**changed: object) -> Bridge:
        bridge = Bridge(settings.replace(bridge_port=free_port(), **changed))
        await bridge.start()
        started.append(bridge)
        return bridge

    yield start
    for bridge in reversed(started):
        await bridge.stop()


async def _insert_histories(db: asyncpg.Pool, count: int) -> list[int]:
    ids = []
    for i in range(count):
        ids.append(await create_history(db, None, f"h{i}"))
    return ids


async def test_rollback_publishes_nothing(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """A rolled-back transaction publishes nothing; a committed one publishes."""
    await start_bridge()
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        rolled_back = await conn.fetchval(
            "INSERT INTO history (name) VALUES ('gone') RETURNING id"
        )
        await transaction.rollback()
    barrier = await create_history(db, None, "barrier")

    await wait_until(lambda: changes.has("history", barrier), 10, "barrier change")

    assert not await changes.has("history", rolled_back)


async def test_change_published_after_commit(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """A change inside an open transaction is published only after its COMMIT."""
    await start_bridge()
    history = await create_history(db, None, "pending")
    await wait_until(lambda: changes.has("history", history), 10, "insert change")
    inserted = await changes.last("history", history)

    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("UPDATE history SET name = 'renamed' WHERE id = $1", history)
        barrier = await create_history(db, None, "barrier")
        await wait_until(lambda: changes.has("history", barrier), 10, "barrier change")
        before_commit = await changes.last("history", history)
        await transaction.commit()
    expected = await audit_times(db)
    await wait_for_audit_times(db, changes, 10)

    assert before_commit == inserted
    after_commit = await changes.last("history", history)
    assert after_commit is not None
    assert after_commit.commit_time == expected[("history", str(history))]
    assert after_commit.commit_time > inserted.commit_time


async def test_changes_while_stopped_published_at_start(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Changes committed while no bridge runs are published when one starts."""
    first = await start_bridge()
    early = await create_history(db, None, "early")
    await wait_until(lambda: changes.has("history", early), 10, "early change")
    await first.stop()

    missed = await _insert_histories(db, 50)
    await db.execute(
        "INSERT INTO notification (category, content) VALUES ('message', '{}')"
    )
    await start_bridge()
    expected = await wait_for_audit_times(db, changes, 15)

    stored = await changes.by_key()
    assert len(expected) == 52
    assert set(stored) == set(expected)
    for history in missed:
        assert ("history", str(history)) in stored
    # The catch-up looked back over the overlap window but found the early
    # change already stored, so it was not published again.
    assert len(stored[("history", str(early))]) == 1


async def test_first_bridge_start_publishes_backlog(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """With an empty stream, a starting bridge publishes what the audit tables hold."""
    await _insert_histories(db, 20)

    await start_bridge()
    expected = await wait_for_audit_times(db, changes, 15)

    assert len(expected) == 20
    assert len(await changes.all()) == 20


async def test_coalescing_leading_and_trailing(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """50 quick updates of one history give one leading and one trailing change."""
    window_ms = 500
    history = await create_history(db, None, "busy")
    bridge = await start_bridge(bridge_coalesce_ms=window_ms)
    await wait_until(lambda: changes.has("history", history), 10, "insert change")
    await wait_until(lambda: _windows_closed(bridge), 10, "the insert's window closing")
    inserted = await changes.last("history", history)

    async def leading_published() -> bool:
        return await changes.last("history", history) != inserted

    update = "UPDATE history SET name = $2 WHERE id = $1"
    async with db.acquire() as conn:
        started = time.monotonic()
        await conn.execute(update, history, "0")
        # Waiting for the leading change makes sure it was read before the
        # other updates, so that it cannot already carry the last one.
        await wait_until(leading_published, 10, "the leading change")
        for i in range(1, 50):
            await conn.execute(update, history, str(i))
        elapsed_ms = (time.monotonic() - started) * 1000
    expected = await wait_for_audit_times(db, changes, 10)
    await wait_until(lambda: _windows_closed(bridge), 10, "the last window closing")

    assert elapsed_ms < window_ms, "the updates must fit in one window"
    times = (await changes.by_key())[("history", str(history))]
    updates = times[1:]
    assert len(updates) == 2
    leading, trailing = updates
    assert leading < trailing
    assert trailing == expected[("history", str(history))]


async def test_bulk_statement_neither_blocks_nor_floods(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Statements touching 10,000 rows give one change per key; health stays live."""
    bridge = await start_bridge()
    histories = await db.fetch(
        "INSERT INTO history (name) SELECT 'h' || n FROM generate_series(1, 100) n "
        "RETURNING id"
    )
    await db.execute(
        """INSERT INTO history_dataset_association (history_id, name)
        SELECT h, 'd' FROM unnest($1::int[]) AS h, generate_series(1, 100)""",
        [row["id"] for row in histories],
    )
    await wait_for_audit_times(db, changes, 30)
    before = len(await changes.all())

    await db.execute("UPDATE history_dataset_association SET state = 'ok'")
    await wait_for_audit_times(db, changes, 30)
    after_datasets = len(await changes.all())

    await db.execute(
        "INSERT INTO history (name) SELECT 'bulk' FROM generate_series(1, 10000)"
    )
    await db.execute("UPDATE history SET name = name || '!'")
    marker = await create_history(db, None, "marker")
    health_ms = []
    url = f"http://127.0.0.1:{bridge.settings.bridge_port}/healthz"
    async with httpx.AsyncClient(timeout=5) as client:

        async def marker_published() -> bool:
            started = time.monotonic()
            response = await client.get(url)
            health_ms.append((time.monotonic() - started) * 1000)
            assert response.status_code == 200
            return await changes.has("history", marker)

        await wait_until(marker_published, 60, "marker change after the bulk update")
    expected = await wait_for_audit_times(db, changes, 60)

    assert after_datasets - before == 100  # 10,000 dataset rows in 100 histories
    assert len(expected) == 100 + 10_000 + 1
    assert max(health_ms) < 1000, "the bridge's event loop stalled"


@pytest.mark.parametrize("mode", ["listen", "poll"])
async def test_feed_modes_deliver_same(
    mode: str, start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Polling publishes the same changes as LISTEN for the same workload."""
    bridge = await start_bridge(bridge_mode=mode, bridge_poll_interval_seconds=0.2)
    user = await create_user(db, "writer")
    histories = [await create_history(db, user, f"h{i}") for i in range(10)]
    for i in range(5):
        await db.execute(
            "UPDATE history SET name = $2 WHERE id = $1", histories[0], f"u{i}"
        )
    await db.execute(
        "INSERT INTO history_dataset_association (history_id, name) VALUES ($1, 'x')",
        histories[1],
    )
    await db.execute(
        "INSERT INTO notification (category, content) VALUES ('message', '{}')"
    )
    expected = await wait_for_audit_times(db, changes, 15)

    assert bridge.mode == mode
    assert set(await changes.by_key()) == set(expected)
    assert len(expected) == 11


async def test_large_text_values_commit(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Rows with 8,000-byte text values commit, and their changes are published."""
    await start_bridge()
    big = "x" * 8000
    history = await create_history(db, None, "big")
    await db.execute(
        "INSERT INTO history_dataset_association (history_id, name, peek) "
        "VALUES ($1, 'd', $2)",
        history,
        big,
    )
    await db.execute(
        "UPDATE history_dataset_association SET peek = $2 || 'y' WHERE history_id = $1",
        history,
        big,
    )
    notification = await db.fetchval(
        "INSERT INTO notification (category, content) VALUES ('message', $1) "
        "RETURNING id",
        big + big,
    )

    expected = await wait_for_audit_times(db, changes, 10)

    assert ("history", str(history)) in expected
    assert ("notification", str(notification)) in expected


async def test_terminated_backend_loses_nothing(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Terminating the bridge's Postgres sessions mid-burst loses no change."""
    bridge = await start_bridge()
    terminated = 0
    attempted = False

    async def writer(count: int) -> None:
        nonlocal terminated, attempted
        for i in range(count):
            await create_history(db, None, f"w{i}")
            if i == count // 3 and not attempted:
                # Only one writer terminates, or the other would count the
                # sessions already gone and overwrite the result.
                attempted = True
                terminated = await db.fetchval(
                    """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE application_name = $1""",
                    APPLICATION_NAME,
                )

    await asyncio.gather(writer(500), writer(500))
    expected = await wait_for_audit_times(db, changes, 30)
    await wait_until(
        lambda: _is_leader(bridge), 10, "the bridge leading again after reconnecting"
    )

    assert terminated >= 2  # the lock connection and at least one pool connection
    assert len(expected) == 1000


async def _is_leader(bridge: Bridge) -> bool:
    return bridge.role == "leader"


async def _windows_closed(bridge: Bridge) -> bool:
    return bridge.status()["coalescing"] == 0


async def test_retention_prunes_published_rows(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """Pruning removes published audit rows, keeping each key's newest row."""
    bridge = await start_bridge()
    history = await create_history(db, None, "pruned")
    for i in range(3):
        await db.execute("UPDATE history SET name = $2 WHERE id = $1", history, str(i))
    await db.execute(
        "INSERT INTO notification (category, content) VALUES ('message', '{}')"
    )
    await db.execute("UPDATE notification SET content = '{\"a\": 1}'")
    await wait_for_audit_times(db, changes, 10)
    await bridge.stop()
    unpublished = await create_history(db, None, "after the watermark")
    await db.execute("UPDATE history SET name = 'again' WHERE id = $1", unpublished)
    history_rows_before = await db.fetchval("SELECT count(*) FROM history_audit")

    retention = Retention(db, changes.js, max_age_seconds=0.001, overlap_seconds=0)
    deleted = await retention.prune_once()

    history_rows = await db.fetch(
        "SELECT history_id, count(*) AS n FROM history_audit GROUP BY history_id"
    )
    counts = {row["history_id"]: row["n"] for row in history_rows}
    assert history_rows_before == 6
    assert counts[history] == 1
    assert counts[unpublished] == 2  # newer than the stream's watermark
    assert await db.fetchval("SELECT count(*) FROM tidings_change_audit") == 1
    assert deleted == 3 + 1


async def test_metrics_follow_leadership(
    start_bridge: StartBridge, db: asyncpg.Pool, changes: ChangeLog
):
    """`/metrics` shows the leader gauge and the commit-to-ack histogram."""
    bridge = await start_bridge()
    history = await create_history(db, None, "measured")
    await wait_until(lambda: changes.has("history", history), 10, "the change")
    url = f"http://127.0.0.1:{bridge.settings.bridge_port}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(url)).text
    await bridge.stop()

    assert metric_value(text, "tidings_bridge_leader") == 1
    assert metric_value(text, "tidings_bridge_commit_to_ack_seconds_count") >= 1
    assert REGISTRY.get_sample_value("tidings_bridge_leader") == 0


async def test_self_test_fails_when_notify_unheard(servers: Servers, db: asyncpg.Pool):
    """LISTEN that cannot hear a NOTIFY is rejected with an error naming the fix."""
    other_url = await _create_database(servers, db, "tidings_unheard")
    listen_conn = await asyncpg.connect(other_url)
    lease = Lease(listen_conn, lease_seconds=2.0)
    try:
        with pytest.raises(ListenUnavailableError) as raised:
            # The NOTIFY goes to another database, as a pooler would lose it.
            await check_listen(lease, db, timeout=1.0)
        await check_listen(lease, listen_conn, timeout=5.0)
    finally:
        await listen_conn.close()

    message = str(raised.value)
    assert "LISTEN heard no NOTIFY within 1 s" in message
    assert "TIDINGS_BRIDGE_MODE=poll" in message


async def _create_database(servers: Servers, db: asyncpg.Pool, name: str) -> str:
    try:
        await db.execute(f"CREATE DATABASE {name}")
    except asyncpg.exceptions.DuplicateDatabaseError:
        pass
    return servers.database_url.rsplit("/", 1)[0] + "/" + name


async def test_start_without_postgres_fails(settings: Settings):
    """A bridge that cannot reach Postgres fails to start with a clear error."""
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    bridge = Bridge(settings.replace(database_url=unreachable))

    with pytest.raises(BridgeError) as raised:
        await bridge.start()

    assert str(raised.value).startswith("cannot connect to Postgres:")
    assert bridge.role == "connecting"


def test_invalid_bridge_mode_rejected():
    """An unknown TIDINGS_BRIDGE_MODE is rejected with the variable's name."""
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"TIDINGS_BRIDGE_MODE": "sometimes"})

    assert "TIDINGS_BRIDGE_MODE" in str(raised.value)


def test_zero_lease_rejected():
    """A lease of zero or less is rejected with the variable's name."""
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"TIDINGS_BRIDGE_LEASE_SECONDS": "0"})

    assert "TIDINGS_BRIDGE_LEASE_SECONDS" in str(raised.value)
    assert "Expected `float` > 0.0" in str(raised.value)


def test_coalescing_window_defaults_to_100_ms():
    """The coalescing window is 100 ms unless configured."""
    assert Settings().bridge_coalesce_ms == 100.0
    configured = load_settings({"TIDINGS_BRIDGE_COALESCE_MS": "250"})
    assert configured.bridge_coalesce_ms == 250


async def test_scheduled_notification_on_time(pipeline, changes: ChangeLog):
    """A scheduled notification is delivered within 1 s of its time; expired, never."""
    db = pipeline.db
    user = await create_user(db, "reader")
    await pipeline.settle()
    nc = await nats.connect(pipeline.settings.nats_url)
    subscription = await nc.subscribe(f"tidings.live.user.{user.id}")
    now = await db.fetchval("SELECT clock_timestamp() AT TIME ZONE 'UTC'")
    scheduled = await _notify(db, user.id, publish_in=1.5, expire_in=3600, now=now)
    expired = await _notify(db, user.id, publish_in=1.0, expire_in=0.5, now=now)

    try:
        msg = await subscription.next_msg(timeout=10)
        arrived = time.time()
        barrier_history = await create_history(db, user, "barrier")
        barrier = await subscription.next_msg(timeout=10)
    finally:
        await nc.close()

    publication = now.replace(tzinfo=UTC).timestamp() + 1.5
    assert f'"{scheduled}"' in msg.data.decode()
    assert arrived >= publication - 0.05  # not before its time
    assert arrived - publication < 1.0
    assert f'"{barrier_history}"' in barrier.data.decode()
    # The expired notification got its insert change only, never a due one.
    stored = await changes.by_key()
    assert len(stored[("notification", str(expired))]) == 1
    assert len(stored[("notification", str(scheduled))]) == 2


async def _notify(
    db: asyncpg.Pool, user_id: int, *, publish_in: float, expire_in: float, now
) -> int:
    notification = await db.fetchval(
        """INSERT INTO notification
            (category, content, source, variant, publication_time, expiration_time)
        VALUES ('message', '{}', 'test', 'info',
                $1::timestamp + make_interval(secs => $2),
                $1::timestamp + make_interval(secs => $3))
        RETURNING id""",
        now,
        publish_in,
        expire_in,
    )
    await db.execute(
        "INSERT INTO user_notification_association (user_id, notification_id) "
        "VALUES ($1, $2)",
        user_id,
        notification,
    )
    return notification
