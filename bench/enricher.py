"""Enricher throughput: history changes turned into stored events per second.

An embedded Postgres contains users and their histories; `TIDINGS_CHANGES` is
filled with N history changes (each history changes N / histories times,
as a busy history panel does), then the consumers start and drain it. The
rate is measured between the events stored at 10 % and at 90 % of the run,
from the stream's own timestamps, so process start-up and the tail do not
count.

Measured in the same run:
- the naive baseline: each change looked up in Postgres without a cache and
  each event published with a wait for its acknowledgement before the next,
  one consumer in this process;
- the Tidings enricher (`tidings enricher` processes) with its cache off,
  with one replica, and with two replicas on the shared durable consumer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from bench.system import migrated_servers
from tidings.bridge.service import change_msg_id
from tidings.cli.up import settings_env
from tidings.enricher.audience import RESOLVERS, Lookups
from tidings.enricher.cache import AudienceCache
from tidings.shared.embedded import free_port
from tidings.shared.events import Change, change_decoder, encode
from tidings.shared.nats import ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGE_PREFIX,
    CHANGES_STREAM,
    EVENT_TYPE_HEADER,
    EVENTS_STREAM,
    change_subject,
    event_subject,
)

USERS = 100
RUN_TIMEOUT_SECONDS = 600.0

SECTION = """
## Enricher throughput

`TIDINGS_CHANGES` is filled with {changes} history changes over {histories}
histories of {users} users, then drained; events per second are measured
between the events stored at 10 % and at 90 % of the run, and each
configuration runs {runs} times (median, then lowest to highest). The naive
baseline looks every change up in Postgres and waits for each publish. The
consumers share the machine's cores with Postgres and NATS.

{table}
"""


async def measure_enricher(
    changes: int, histories: int, repeats: int = 3
) -> list[dict]:
    """Measure every configuration `repeats` times on fresh streams; one row each.

    Each row carries the median rate and the lowest and highest of the runs,
    because other processes on the machine make single runs vary.
    """
    async with migrated_servers("tidings-bench-enricher-", fast=True) as (
        root,
        postgres,
        nats_server,
    ):
        settings = Settings(
            database_url=postgres.url,
            nats_url=nats_server.url,
            log_level="WARNING",
            log_format="json",
        )
        history_ids = await _create_histories(settings.database_url, histories)
        runs = [
            ("Naive: uncached lookup, publish and wait per event", 0, None),
            ("Tidings enricher, cache off", 1, 0),
            ("Tidings enricher", 1, settings.enricher_cache_size),
            ("Tidings enricher", 2, settings.enricher_cache_size),
        ]
        rows = []
        for name, replicas, cache_size in runs:
            print(f"enricher: {name}, {replicas or 1} consumer(s)", flush=True)
            rates = []
            for _ in range(repeats):
                rates.append(
                    await _run(
                        settings, root, history_ids, changes, replicas, cache_size
                    )
                )
            rows.append(
                {
                    "name": name,
                    "replicas": replicas or 1,
                    "changes": changes,
                    "runs": repeats,
                    "events_per_second": statistics.median(rates),
                    "lowest": min(rates),
                    "highest": max(rates),
                }
            )
        return rows


async def _create_histories(database_url: str, histories: int) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        users = await conn.fetch(
            "INSERT INTO galaxy_user (email) SELECT 'b' || n || '@example.org'"
            " FROM generate_series(1, $1) AS n RETURNING id",
            USERS,
        )
        user_ids = [u["id"] for u in users]
        rows = await conn.fetch(
            "INSERT INTO history (user_id, name)"
            " SELECT ($1::integer[])[1 + n % $2], 'h' FROM generate_series(1, $3) AS n"
            " RETURNING id",
            user_ids,
            len(user_ids),
            histories,
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _run(
    settings: Settings,
    root: Path,
    history_ids: list[int],
    changes: int,
    replicas: int,
    cache_size: int | None,
) -> float:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    try:
        for stream in (CHANGES_STREAM, EVENTS_STREAM):
            try:
                await js.delete_stream(stream)
            except NotFoundError:
                pass
        await ensure_streams(js, settings)
        await _fill_changes(js, history_ids, changes)
        if replicas == 0:
            consumer = asyncio.create_task(_naive_consumer(settings, js, changes))
            processes = []
        else:
            consumer = None
            child = settings.replace(enricher_cache_size=cache_size)
            processes = [_start_enricher(child, root) for _ in range(replicas)]
        try:
            await _wait_for_events(js, changes, consumer)
        finally:
            if consumer is not None:
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
            for proc in processes:
                proc.terminate()
                proc.wait(30)
        return await _rate(js, changes)
    finally:
        await nc.close()


async def _fill_changes(js: JetStreamContext, history_ids: list[int], changes: int):
    acks = []
    for i in range(changes):
        history_id = str(history_ids[i % len(history_ids)])
        change = Change("history", history_id, datetime.now(UTC))
        acks.append(
            await js.publish_async(
                change_subject("history", history_id),
                encode(change),
                headers={"Nats-Msg-Id": f"{change_msg_id(change)}.{i}"},
            )
        )
    await asyncio.gather(*acks)


def _start_enricher(settings: Settings, root: Path) -> subprocess.Popen:
    env = {**os.environ, **settings_env(settings.replace(enricher_port=free_port()))}
    log = open(root / "enricher.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings.cli.main", "enricher"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


async def _naive_consumer(settings: Settings, js: JetStreamContext, changes: int):
    """Enrich as a first implementation would: no cache, one awaited publish each."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    lookups = Lookups(pool, AudienceCache(0, 0))
    resolve = RESOLVERS["history"]
    subscription = await js.pull_subscribe(
        f"{CHANGE_PREFIX}.>",
        durable="bench-naive",
        stream=CHANGES_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    try:
        while True:
            try:
                messages = await subscription.fetch(64, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in messages:
                change = change_decoder.decode(msg.data)
                delivery = await resolve(lookups, change)
                assert delivery is not None
                for audience in delivery.audiences:
                    await js.publish(
                        event_subject(audience),
                        encode(delivery.data),
                        headers={
                            EVENT_TYPE_HEADER: delivery.event_type,
                            "Nats-Msg-Id": f"{msg.headers['Nats-Msg-Id']}:{audience}",
                        },
                    )
                await msg.ack()
    finally:
        await pool.close()


async def _wait_for_events(
    js: JetStreamContext, changes: int, consumer: asyncio.Task | None
) -> None:
    async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
        while (await js.stream_info(EVENTS_STREAM)).state.messages < changes:
            if consumer is not None and consumer.done():
                consumer.result()
            await asyncio.sleep(0.1)


async def _rate(js: JetStreamContext, changes: int) -> float:
    """Events per second between the events at 10 % and 90 % of the run."""
    first = (await js.stream_info(EVENTS_STREAM)).state.first_seq
    early = first + changes // 10
    late = first + changes * 9 // 10
    start = (await js.get_msg(EVENTS_STREAM, early)).time
    end = (await js.get_msg(EVENTS_STREAM, late)).time
    return (late - early) / max((end - start).total_seconds(), 1e-9)


def enricher_section(rows: list[dict], histories: int) -> str:
    """Format the rows as the BENCHMARKS.md section, with its table."""
    lines = [
        "| measurement | consumers | changes | events/s | range |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['replicas']} | {row['changes']} "
            f"| {row['events_per_second']:,.0f} "
            f"| {row['lowest']:,.0f} to {row['highest']:,.0f} |"
        )
    return SECTION.format(
        changes=rows[0]["changes"],
        histories=histories,
        users=USERS,
        runs=rows[0]["runs"],
        table="\n".join(lines),
    )
