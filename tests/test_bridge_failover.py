"""Failover and recovery: killed leader, restarted Postgres, lost stream tail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from tests.bridge_support import (
    BridgeProcess,
    ChangeLog,
    FreezableProxy,
    wait_for_audit_times,
    wait_until,
)
from tests.conftest import Servers
from tidings.bridge.retry import DATABASE_ERRORS
from tidings.bridge.service import Bridge
from tidings.shared.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from tidings.shared.migrate import upgrade
from tidings.shared.settings import Settings
from tidings.shared.subjects import CHANGES_STREAM


@pytest.fixture
async def changes(servers: Servers) -> AsyncIterator[ChangeLog]:
    """Reader of `TIDINGS_CHANGES` on the session's NATS."""
    nc = await nats.connect(servers.nats_url)
    yield ChangeLog(nc.jetstream())
    await nc.close()


@pytest.fixture
def bridge_processes(settings: Settings, tmp_path: Path):
    """Start bridge processes on free ports; stop any still running afterwards."""
    processes: list[BridgeProcess] = []

    def start(name: str) -> BridgeProcess:
        process = BridgeProcess(
            settings.replace(bridge_port=free_port()), tmp_path / f"{name}.log"
        )
        process.start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


async def _burst(
    db: asyncpg.Pool, count: int, writers: int, pause: float, on_progress
) -> None:
    """Insert `count` histories, one transaction each, from several connections.

    Each writer pauses `pause` seconds between inserts, so the burst lasts
    long enough for a takeover to happen in its middle.
    """
    done = 0

    async def write(share: int) -> None:
        nonlocal done
        for _ in range(share):
            await db.execute("INSERT INTO history (name) VALUES ('burst')")
            done += 1
            await on_progress(done)
            await asyncio.sleep(pause)

    await asyncio.gather(*(write(count // writers) for _ in range(writers)))


async def test_killed_leader_standby_takes_over(
    bridge_processes, db: asyncpg.Pool, changes: ChangeLog
):
    """Two bridges: one publishes; after kill -9 mid-burst the other loses nothing."""
    first = bridge_processes("first")
    await first.wait_for_role("leader", 30)
    second = bridge_processes("second")
    await second.wait_for_role("standby", 30)
    killed_at: float | None = None

    async def _killed() -> bool:
        return killed_at is not None

    async def kill_midway(done: int) -> None:
        nonlocal killed_at
        if done == 1000 and killed_at is None:
            before_kill = await second.health()
            assert before_kill is not None
            assert before_kill["published"] == 0, "the standby published"
            assert await second.metric("tidings_bridge_leader") == 0
            assert await first.metric("tidings_bridge_leader") == 1
            first.kill()
            killed_at = time.monotonic()

    burst = asyncio.create_task(
        _burst(db, 2000, writers=4, pause=0.006, on_progress=kill_midway)
    )
    await wait_until(_killed, 30, "the leader killed mid-burst")
    second_health = await second.wait_for_role("leader", 10)
    takeover_seconds = time.monotonic() - (killed_at or 0)
    still_writing = not burst.done()
    await burst
    expected = await wait_for_audit_times(db, changes, 30)
    stored = await changes.by_key()

    assert still_writing, "the burst ended before the standby took over"
    assert len(expected) == 2000
    assert len(stored) == 2000  # count distinct: every change id is in the stream
    assert takeover_seconds < 5, f"takeover took {takeover_seconds:.1f} s"
    assert second_health["mode"] == "listen"
    final = await second.health()
    assert final is not None
    assert final["published"] > 0
    assert await second.metric("tidings_bridge_leader") == 1
    assert await second.metric("tidings_bridge_changes_published_total") > 0
    log = second.log_path.read_text()
    assert '"event": "bridge is standby: another bridge holds the lock"' in log
    assert '"event": "bridge is leader"' in log


async def test_half_open_leader_replaced(
    settings: Settings, db: asyncpg.Pool, changes: ChangeLog, servers: Servers
):
    """A leader whose connections go silent loses the lock; nothing is lost."""
    port = int(servers.database_url.rsplit(":", 1)[1].split("/")[0])
    proxy = FreezableProxy(port)
    await proxy.start()
    proxied = servers.database_url.replace(f":{port}/", f":{proxy.port}/")
    cut_off = Bridge(settings.replace(database_url=proxied, bridge_port=free_port()))
    standby = Bridge(settings.replace(bridge_port=free_port()))
    try:
        await cut_off.start()
        await standby.start()
        assert (cut_off.role, standby.role) == ("leader", "standby")
        holder = await db.fetchval(_LOCK_HOLDER)

        frozen = proxy.freeze()
        await _burst(db, 200, writers=2, pause=0.01, on_progress=_ignore)
        await wait_until(
            lambda: _one_leader(cut_off, standby), 15, "a leader after the freeze"
        )
        expected = await wait_for_audit_times(db, changes, 15)
        # The proxy keeps the silent session's socket open to Postgres,
        # so only the server's idle_session_timeout can have ended it.
        holder_alive = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", holder
        )
    finally:
        await standby.stop()
        await cut_off.stop()
        await proxy.close()

    assert frozen >= 2  # the lock connection and the pool's
    assert holder_alive == 0
    assert len(expected) == 200


_LOCK_HOLDER = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"


async def _ignore(done: int) -> None:
    pass


async def _one_leader(*bridges: Bridge) -> bool:
    return [bridge.role for bridge in bridges].count("leader") == 1 and any(
        bridge.status()["published"] > 0 and bridge.role == "leader"
        for bridge in bridges
    )


@pytest.fixture
def own_postgres(tmp_path: Path):
    """A Postgres of this test's own, which it may stop and start."""
    postgres = EmbeddedPostgres(tmp_path / "postgres", fast=True)
    postgres.start()
    upgrade(postgres.url)
    yield postgres
    postgres.stop()


async def test_postgres_restart_loses_nothing(
    own_postgres: EmbeddedPostgres,
    settings: Settings,
    db: asyncpg.Pool,
    changes: ChangeLog,
):
    """A Postgres restart mid-burst loses no committed change."""
    bridge = Bridge(settings.replace(database_url=own_postgres.url))
    await bridge.start()
    committed = 0
    restarted = asyncio.Event()

    async def write(count: int) -> None:
        nonlocal committed
        conn = None
        while committed < count:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(own_postgres.url)
                await conn.execute("INSERT INTO history (name) VALUES ('w')")
                committed += 1
            except DATABASE_ERRORS:
                conn = None
                await asyncio.sleep(0.1)
            if committed == count // 3 and not restarted.is_set():
                restarted.set()
                await asyncio.to_thread(_restart, own_postgres)
        await conn.close()

    try:
        await write(600)
        own_pool = await asyncpg.create_pool(own_postgres.url, min_size=1, max_size=2)
        try:
            expected = await wait_for_audit_times(own_pool, changes, 30)
        finally:
            await own_pool.close()
    finally:
        await bridge.stop()

    assert len(expected) >= 600


def _restart(postgres: EmbeddedPostgres) -> None:
    postgres.stop()
    postgres.start()


async def test_lost_stream_tail_refilled(
    settings: Settings, db: asyncpg.Pool, tmp_path: Path
):
    """Changes lost from the stream's tail while NATS restarts are published again."""
    own_nats = EmbeddedNats(tmp_path / "nats")
    own_nats.start()
    bridge = Bridge(settings.replace(nats_url=own_nats.url))
    nc = None
    try:
        await bridge.start()
        await db.execute(
            "INSERT INTO history (name) SELECT 'h' FROM generate_series(1, 20)"
        )
        nc = await nats.connect(own_nats.url)
        await wait_for_audit_times(db, ChangeLog(nc.jetstream()), 10)
        await _drop_tail(ChangeLog(nc.jetstream()), 10)
        await nc.close()
        # A restart rebuilds JetStream's duplicate ids from what is on disk, so
        # the deleted changes count as never stored, as after a crash.
        own_nats.stop()
        own_nats.start()

        nc = await nats.connect(own_nats.url)
        log = ChangeLog(nc.jetstream())
        expected = await wait_for_audit_times(db, log, 15)

        assert len(expected) == 20
        assert len(await log.subjects()) == 20
        assert bridge.role == "leader"
    finally:
        await bridge.stop()
        if nc is not None and not nc.is_closed:
            await nc.close()
        own_nats.stop()


async def _drop_tail(log: ChangeLog, count: int) -> None:
    """Delete the last `count` messages, as a crash before an fsync would."""
    info = await log.js.stream_info(CHANGES_STREAM)
    last = info.state.last_seq
    for seq in range(last - count + 1, last + 1):
        await log.js.delete_msg(CHANGES_STREAM, seq)

    async def gone() -> bool:
        return len(await log.subjects()) == 20 - count

    await wait_until(gone, 5, "the tail deleted")
