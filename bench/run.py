"""`just bench`: measure Tidings and its naive baseline, write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench.bridge import bridge_table, run_bridge_bench
from bench.edge import measure_connections
from bench.edge import table as connections_table
from bench.enricher import enricher_section, measure_enricher
from bench.latency import measure_polling, measure_tidings, summarize
from bench.system import running_system
from bench.tracing import measure_tracing, tracing_section

OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

# The latency run changes one history back to back. The bridge's coalescing
# would hold each change that follows another of the same history within its
# window until the window ends, so it is off for this run.
SYSTEM_ENV = {"TIDINGS_BRIDGE_COALESCE_MS": "0"}


async def _latency_rows(changes: int, baseline_changes: int) -> list[dict]:
    with running_system(SYSTEM_ENV) as endpoints:
        print(f"commit-to-frame latency over {changes} sequential changes", flush=True)
        tidings = await measure_tidings(endpoints, changes)
        user = next(u for u in endpoints["users"] if u["histories"])
        print(f"baseline: polling every 3 s, {baseline_changes} changes", flush=True)
        polling = await measure_polling(
            endpoints["database_url"], user["histories"][-1]["id"], baseline_changes
        )
    return [
        summarize("Tidings: UPDATE to SSE frame", tidings),
        summarize("Baseline: poll every 3 s", polling),
    ]


def _table(rows: list[dict]) -> str:
    lines = [
        "| measurement | n | p50 (ms) | p99 (ms) | mean (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['n']} | {row['p50_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {row['mean_ms']:.1f} |"
        )
    return "\n".join(lines)


def _write(table: str) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    machine += f", Python {platform.python_version()}"
    text = f"""# Benchmarks

Written by `just bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({machine}).
Postgres, NATS and the four services run on the same machine, started by
`tidings up` with default settings; the client is a separate process.

## Commit-to-frame latency of a history change

{table}
"""
    OUTPUT.write_text(text)


def _append_bridge(table: str) -> None:
    text = f"""
## Bridge: throughput and commit-to-JetStream latency

The bridge alone, as its own process, with Postgres (fsync on) and NATS on
the same machine and the load generator in the benchmark's process
(`bench/bridge.py`).

{table}
"""
    with OUTPUT.open("a") as output:
        output.write(text)


def _append_coalescing_note() -> None:
    text = """
The latency run above sets `TIDINGS_BRIDGE_COALESCE_MS=0`, because it changes
one history back to back. With the default 100 ms window, a change that
follows another change of the same history within 100 ms is held until the
window ends, so such a change waits up to 100 ms longer. A change to a history
that did not change in the last 100 ms goes out at once either way.
"""
    with OUTPUT.open("a") as output:
        output.write(text)


def _connections_section(connections: int, rows: list[dict]) -> str:
    return f"""
## {connections:,} idle SSE connections in one process

Each server is its own process; one client process on the same machine
holds every connection over loopback (`bench/edge.py` says how each figure
is taken). Broadcast times run from publishing one event to the moment the
client read it on the last (or the median) connection, median of 5 rounds.

{connections_table(rows)}
"""


def _append(text: str) -> None:
    with OUTPUT.open("a") as output:
        output.write(text)


def main() -> None:
    """Run the benchmarks, print the table and write it to BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000, help="sequential changes")
    parser.add_argument(
        "--baseline-changes", type=int, default=10, help="changes seen by polling"
    )
    parser.add_argument(
        "--bridge-changes",
        type=int,
        default=40_000,
        help="changes in the bridge throughput run (0 skips the bridge benchmark)",
    )
    parser.add_argument(
        "--enricher-changes",
        type=int,
        default=20_000,
        help="changes drained per enricher configuration (0 skips that benchmark)",
    )
    parser.add_argument(
        "--enricher-histories",
        type=int,
        default=2_000,
        help="histories the enricher benchmark's changes are spread over",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=10_000,
        help="idle SSE connections held by one edge process (0 skips that part)",
    )
    parser.add_argument(
        "--tabs-per-user",
        type=int,
        default=1,
        help="connections that share one user, and so one NATS subscription",
    )
    parser.add_argument(
        "--tracing-changes",
        type=int,
        default=300,
        help="sequential changes per run, tracing off and on (0 skips that part)",
    )
    args = parser.parse_args()
    rows = asyncio.run(_latency_rows(args.changes, args.baseline_changes))
    table = _table(rows)
    print(table)
    _write(table)
    _append_coalescing_note()
    if args.bridge_changes:
        print("bridge throughput and latency", flush=True)
        runs = asyncio.run(run_bridge_bench(args.bridge_changes))
        bridge = bridge_table(runs)
        print(bridge)
        _append_bridge(bridge)
    if args.enricher_changes > 0:
        enricher_rows = asyncio.run(
            measure_enricher(args.enricher_changes, args.enricher_histories)
        )
        enricher = enricher_section(enricher_rows, args.enricher_histories)
        print(enricher)
        _append(enricher)
    if args.connections > 0:
        edge_rows = asyncio.run(
            measure_connections(args.connections, args.tabs_per_user)
        )
        print(connections_table(edge_rows))
        _append(_connections_section(args.connections, edge_rows))
    if args.tracing_changes > 0:
        tracing_rows = asyncio.run(measure_tracing(args.tracing_changes, SYSTEM_ENV))
        tracing_table = _table(tracing_rows)
        print(tracing_table)
        _append(tracing_section(tracing_rows, tracing_table))
    print(f"written to {OUTPUT}")


if __name__ == "__main__":
    main()
