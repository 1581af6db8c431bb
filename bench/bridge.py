"""Throughput and commit-to-JetStream latency of the bridge, next to a naive bridge.

Each bridge runs as its own process against an embedded Postgres (default
durability: fsync and synchronous_commit on) and an embedded NATS on this
machine. The writers and an ordered consumer of `TIDINGS_CHANGES`, which
delivers only stored messages, run in the benchmark's process and share the
same cores.

- Latency: single-row UPDATE transactions of distinct histories, sent at a
  fixed rate whatever the replies (open loop). The clock runs from sending the
  UPDATE to the consumer receiving the change, so it includes the UPDATE and
  its commit.
- Throughput: 8 writers commit UPDATEs of distinct histories, as fast as
  they can, until `changes` rows are written. This runs once with 10
  histories per transaction and once with 50. The second costs the writers
  less per change, so it offers more. Throughput is the changes stored
  divided by the time from the first UPDATE sent to the last change
  received. When it equals the offered rate, the bridge kept up and the
  writers were the limit. Zero loss is checked: every audit row written must
  arrive with its time. Histories repeat only after the whole set, long after
  the coalescing window, so no change is merged.

The baseline is `bench.naive_bridge`: one SELECT and one awaited publish per
NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from bench.latency import percentile
from bench.system import migrated_servers
from tidings.shared.embedded import free_port
from tidings.shared.events import change_decoder
from tidings.shared.nats import ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import CHANGE_PREFIX, CHANGES_STREAM

HISTORIES = 60_000
WRITERS = 8
WAIT_SECONDS = 240.0


@dataclass
class Throughput:
    """One throughput run: changes written, stored and lost."""

    rows_per_commit: int
    changes: int
    lost: int
    seconds: float
    offered_per_second: float

    @property
    def per_second(self) -> float:
        """Changes stored per second, from the first UPDATE to the last arrival."""
        return self.changes / self.seconds if self.seconds else 0.0


@dataclass
class BridgeRun:
    """Results of one bridge: latencies and throughput runs."""

    name: str
    latency_rate: float
    latencies: list[float] = field(default_factory=list)
    throughputs: list[Throughput] = field(default_factory=list)


class _Collector:
    """Receive time of every change, by key and by (key, commit time)."""

    def __init__(self) -> None:
        self.by_key: dict[str, float] = {}
        self.by_change: dict[tuple[str, datetime], float] = {}

    async def on_msg(self, msg) -> None:
        now = time.perf_counter()
        change = change_decoder.decode(msg.data)
        self.by_key.setdefault(change.key, now)
        self.by_change.setdefault((change.key, change.commit_time), now)


async def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.contextmanager
def _bridge_process(command: list[str], env: dict[str, str], log: Path):
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _reset(pool: asyncpg.Pool, nats_url: str) -> None:
    """Empty the audit tables and the stream, so no run receives another's changes."""
    await pool.execute("TRUNCATE history_audit, tidings_change_audit")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(CHANGES_STREAM)
    await ensure_streams(js, Settings(nats_url=nats_url))
    await nc.close()


async def _latency_phase(
    pool: asyncpg.Pool, ids: list[int], rate: float, seconds: float, seen: _Collector
) -> list[float]:
    count = int(rate * seconds)
    sent: dict[str, float] = {}
    updates = []
    start = time.perf_counter()
    for i, history in enumerate(ids[:count]):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[str(history)] = time.perf_counter()
        updates.append(
            asyncio.create_task(
                pool.execute("UPDATE history SET name = name WHERE id = $1", history)
            )
        )
    await asyncio.gather(*updates)
    await _wait_for(lambda: all(key in seen.by_key for key in sent), WAIT_SECONDS)
    return [seen.by_key[key] - t for key, t in sent.items() if key in seen.by_key]


async def _throughput_phase(
    pool: asyncpg.Pool,
    ids: list[int],
    changes: int,
    rows_per_commit: int,
    seen: _Collector,
) -> Throughput:
    db_start = await pool.fetchval("SELECT clock_timestamp() AT TIME ZONE 'UTC'")
    position = 0

    async def write() -> None:
        nonlocal position
        while position < changes:
            batch = [ids[(position + j) % len(ids)] for j in range(rows_per_commit)]
            position += rows_per_commit
            await pool.execute(
                "UPDATE history SET name = name WHERE id = ANY($1::int[])", batch
            )

    first_sent = time.perf_counter()
    await asyncio.gather(*(write() for _ in range(WRITERS)))
    writes_done = time.perf_counter()

    rows = await pool.fetch(
        "SELECT history_id::text AS key, update_time FROM history_audit "
        "WHERE update_time >= $1",
        db_start,
    )
    expected = {(row["key"], row["update_time"].replace(tzinfo=UTC)) for row in rows}
    await _wait_for(lambda: expected <= seen.by_change.keys(), WAIT_SECONDS)
    arrived = [seen.by_change[c] for c in expected if c in seen.by_change]
    return Throughput(
        rows_per_commit=rows_per_commit,
        changes=len(expected),
        lost=len(expected) - len(arrived),
        seconds=max(arrived, default=first_sent) - first_sent,
        offered_per_second=len(expected) / (writes_done - first_sent),
    )


async def measure_bridge(
    name: str,
    command: list[str],
    env: dict[str, str],
    pool: asyncpg.Pool,
    nats_url: str,
    ids: list[int],
    *,
    latency_rate: float,
    changes: int,
    rows_per_commit: tuple[int, ...],
    log: Path,
) -> BridgeRun:
    """Run one bridge process through the latency and throughput phases."""
    await _reset(pool, nats_url)
    run = BridgeRun(name, latency_rate)
    seen = _Collector()
    nc = await nats.connect(nats_url)
    try:
        subscription = await nc.jetstream().subscribe(
            f"{CHANGE_PREFIX}.>",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            cb=seen.on_msg,
        )
        with _bridge_process(command, env, log):
            probe = ids[-1]
            ready = False
            while not ready:
                await pool.execute(
                    "UPDATE history SET name = name WHERE id = $1", probe
                )
                ready = await _wait_for(lambda: str(probe) in seen.by_key, 1.0)
            print(f"  {name}: latency at {latency_rate:g} changes/s", flush=True)
            run.latencies = await _latency_phase(
                pool, ids[:-1], latency_rate, 3.0, seen
            )
            for rows in rows_per_commit:
                print(f"  {name}: {changes} changes, {rows} per commit", flush=True)
                run.throughputs.append(
                    await _throughput_phase(pool, ids[:-1], changes, rows, seen)
                )
        await subscription.unsubscribe()
    finally:
        await nc.close()
    return run


async def run_bridge_bench(
    changes: int = 40_000,
    latency_rate: float = 1000.0,
    rows_per_commit: tuple[int, ...] = (10, 50),
) -> list[BridgeRun]:
    """Start embedded servers, then measure the bridge and the naive baseline."""
    async with migrated_servers("tidings-bridge-bench-", fast=False) as (
        root,
        postgres,
        nats_server,
    ):
        pool = await asyncpg.create_pool(
            postgres.url, min_size=WRITERS, max_size=WRITERS
        )
        ids = [
            row["id"]
            for row in await pool.fetch(
                "INSERT INTO history (name) SELECT 'h' "
                "FROM generate_series(1, $1) RETURNING id",
                HISTORIES,
            )
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            TIDINGS_DATABASE_URL=postgres.url,
            TIDINGS_NATS_URL=nats_server.url,
            TIDINGS_BRIDGE_PORT=str(free_port()),
            TIDINGS_LOG_LEVEL="WARNING",
        )
        bridges = [
            (
                "Tidings bridge",
                [sys.executable, "-m", "tidings.cli.main", "bridge"],
            ),
            (
                "Baseline: SELECT and awaited publish per NOTIFY",
                [
                    sys.executable,
                    "-m",
                    "bench.naive_bridge",
                    postgres.url,
                    nats_server.url,
                ],
            ),
        ]
        runs = []
        for name, command in bridges:
            runs.append(
                await measure_bridge(
                    name,
                    command,
                    env,
                    pool,
                    nats_server.url,
                    ids,
                    latency_rate=latency_rate,
                    changes=changes,
                    rows_per_commit=rows_per_commit,
                    log=root / "bridge.log",
                )
            )
        await pool.close()
    return runs


def bridge_table(runs: list[BridgeRun]) -> str:
    """Markdown tables of the runs: latency, then throughput."""
    rate = runs[0].latency_rate if runs else 0
    lines = [
        f"Latency at {rate:g} single-row changes/s, from sending the UPDATE to "
        "receiving the stored change:",
        "",
        "| bridge | n | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for run in runs:
        p50 = percentile(run.latencies, 0.50) * 1000
        p99 = percentile(run.latencies, 0.99) * 1000
        lines.append(f"| {run.name} | {len(run.latencies)} | {p50:.1f} | {p99:.1f} |")
    lines += [
        "",
        f"Throughput: {WRITERS} writers committing as fast as they can; "
        "`offered` is the rate the writers achieved, `stored` the changes "
        "stored per second from the first UPDATE to the last arrival, `lost` "
        "the audit rows that never arrived. Where `stored` matches `offered`, "
        "the bridge kept up and the writers, which share the cores, were the "
        "limit:",
        "",
        "| bridge | changes per commit | changes | lost | offered (/s) | stored (/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for result in run.throughputs:
            lines.append(
                f"| {run.name} | {result.rows_per_commit} | {result.changes} "
                f"| {result.lost} | {result.offered_per_second:,.0f} "
                f"| {result.per_second:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run the bridge benchmark alone and print its table."""
    runs = asyncio.run(run_bridge_bench())
    print(bridge_table(runs))


if __name__ == "__main__":
    main()
