"""Commit-to-frame latency of history changes, next to the polling it replaces.

Tidings: each of N sequential changes is an autocommitted UPDATE of a history
row; the clock runs from sending the statement to parsing the frame off the
SSE stream. Baseline: a client polling the history's `update_time` every
3 seconds, as Galaxy's history panel does, over a smaller number of changes
made at random moments.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import asyncpg

from tests.sse_client import open_stream

POLL_INTERVAL_SECONDS = 3.0


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def measure_tidings(endpoints: dict, changes: int) -> list[float]:
    """Measure seconds from UPDATE to frame for `changes` sequential changes."""
    user = next(u for u in endpoints["users"] if u["histories"])
    history_id = user["histories"][0]["id"]
    conn = await asyncpg.connect(endpoints["database_url"])
    latencies = []
    headers = {"x-api-key": user["api_key"]}
    async with open_stream(endpoints["stream_url"], headers=headers) as stream:
        for i in range(changes):
            start = time.perf_counter()
            await conn.execute(
                "UPDATE history SET name = $2 WHERE id = $1", history_id, f"n{i}"
            )
            frame = await stream.next_event(timeout=10)
            latencies.append(time.perf_counter() - start)
            assert frame.event == "history_update"
            if (i + 1) % 100 == 0:
                print(f"  tidings: {i + 1}/{changes} changes", flush=True)
    await conn.close()
    return latencies


async def measure_polling(
    database_url: str, history_id: int, changes: int
) -> list[float]:
    """Measure seconds from UPDATE to the first poll that returns it (3 s polls)."""
    writer = await asyncpg.connect(database_url)
    poller = await asyncpg.connect(database_url)
    first_seen: dict[object, float] = {}

    async def poll() -> None:
        while True:
            value = await poller.fetchval(
                "SELECT update_time FROM history WHERE id = $1", history_id
            )
            first_seen.setdefault(value, time.perf_counter())
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

    polling = asyncio.create_task(poll())
    latencies = []
    for i in range(changes):
        # Changes land at a random phase of the poll loop, as user actions do.
        await asyncio.sleep(random.uniform(0, POLL_INTERVAL_SECONDS))
        start = time.perf_counter()
        value = await writer.fetchval(
            """UPDATE history SET update_time = clock_timestamp() AT TIME ZONE 'UTC'
            WHERE id = $1 RETURNING update_time""",
            history_id,
        )
        while value not in first_seen:
            await asyncio.sleep(0.01)
        latencies.append(first_seen[value] - start)
        print(f"  polling: {i + 1}/{changes} changes", flush=True)
    polling.cancel()
    await asyncio.gather(polling, return_exceptions=True)
    await writer.close()
    await poller.close()
    return latencies


def summarize(name: str, latencies: list[float]) -> dict:
    """Return a table row: p50, p99 and mean in milliseconds."""
    return {
        "name": name,
        "n": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }
