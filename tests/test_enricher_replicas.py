"""Two enricher processes share the work; killing one loses and repeats no event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import nats
from nats.js import JetStreamContext

from tests.stored_events import read_events
from tidings.bridge.service import change_msg_id
from tidings.cli.up import settings_env
from tidings.shared.embedded import free_port
from tidings.shared.events import Change, encode
from tidings.shared.nats import ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGES_STREAM,
    ENRICHER_DURABLE,
    change_subject,
    user_audience,
)

USERS = 20
HISTORIES_PER_USER = 100
CHANGES = USERS * HISTORIES_PER_USER
# Short, so the changes the killed process held come back quickly.
ACK_WAIT_SECONDS = 2.0


@dataclass
class EnricherProcess:
    """An enricher started as `python -m tidings.cli.main enricher`."""

    proc: subprocess.Popen
    log_path: Path
    port: int

    def enriched(self) -> list[dict]:
        """The `change enriched` log lines it has written so far."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"change enriched"' in line:
                lines.append(json.loads(line))
        return lines

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until its `/readyz` returns 200."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with httpx.AsyncClient() as client, asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Terminate it, if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def _start_enricher(settings: Settings, log_path: Path) -> EnricherProcess:
    port = free_port()
    child = settings.replace(
        enricher_port=port,
        enricher_ack_wait_seconds=ACK_WAIT_SECONDS,
        log_format="json",
        log_level="INFO",
    )
    env = {**os.environ, **settings_env(child)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidings.cli.main", "enricher"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return EnricherProcess(proc, log_path, port)


async def _create_histories(db: asyncpg.Pool) -> dict[int, int]:
    """Insert the users and their histories; return each history's owner."""
    users = await db.fetch(
        "INSERT INTO galaxy_user (email) SELECT 'u' || n || '@example.org'"
        " FROM generate_series(1, $1) AS n RETURNING id",
        USERS,
    )
    rows = await db.fetch(
        "INSERT INTO history (user_id, name)"
        " SELECT u, 'h' FROM unnest($1::integer[]) AS u, generate_series(1, $2)"
        " RETURNING id, user_id",
        [u["id"] for u in users],
        HISTORIES_PER_USER,
    )
    return {r["id"]: r["user_id"] for r in rows}


async def _publish_burst(js: JetStreamContext, history_ids: list[int]) -> set[str]:
    """Publish one change per history, as the bridge would; return their ids."""
    ids = set()
    acks = []
    for history_id in history_ids:
        change = Change("history", str(history_id), datetime.now(UTC))
        msg_id = change_msg_id(change)
        ids.add(msg_id)
        acks.append(
            await js.publish_async(
                change_subject("history", str(history_id)),
                encode(change),
                headers={"Nats-Msg-Id": msg_id},
            )
        )
    await asyncio.gather(*acks)
    return ids


async def _wait_consumer_done(js: JetStreamContext, timeout: float = 120.0) -> None:
    """Wait until every change was delivered and acknowledged."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(CHANGES_STREAM, ENRICHER_DURABLE)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.2)


async def test_kill_one_replica_midway(
    settings: Settings, db: asyncpg.Pool, tmp_path: Path
):
    """A burst of 2,000 changes, one of two enrichers killed -9: each event once."""
    owners = await _create_histories(db)
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    change_ids = await _publish_burst(js, sorted(owners))
    first = _start_enricher(settings, tmp_path / "first.log")
    second = _start_enricher(settings, tmp_path / "second.log")
    try:
        await first.wait_ready()
        await second.wait_ready()

        async with asyncio.timeout(60):
            while len(first.enriched()) < CHANGES // 10:
                await asyncio.sleep(0.01)
        first.proc.kill()
        first.proc.wait(10)
        await _wait_consumer_done(js)
    finally:
        first.stop()
        second.stop()
        await nc.close()

    events = await read_events(settings.nats_url)
    assert len(change_ids) == CHANGES
    redelivered = [line for line in second.enriched() if line["deliveries"] > 1]
    assert redelivered, "the killed enricher held no unacknowledged change"
    msg_ids = Counter(e.msg_id for e in events)
    assert max(msg_ids.values()) == 1
    assert {m.rsplit(":", 1)[0] for m in msg_ids} == change_ids
    delivered = Counter((e.audience, e.ids) for e in events)
    expected = {(user_audience(owner), (str(h),)) for h, owner in owners.items()}
    assert set(delivered) == expected
    assert max(delivered.values()) == 1
    assert len(events) == CHANGES
