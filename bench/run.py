"""`just bench`: measure Tidings and its naive baseline, write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench.edge import measure_connections
from bench.edge import table as connections_table
from bench.latency import measure_polling, measure_tidings, summarize
from bench.system import running_system

OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


async def _latency_rows(changes: int, baseline_changes: int) -> list[dict]:
    with running_system() as endpoints:
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


def _write(table: str, extra: str = "") -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    machine += f", Python {platform.python_version()}"
    text = f"""# Benchmarks

Written by `just bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({machine}).
Postgres, NATS and the four services run on the same machine, started by
`tidings up` with default settings; the client is a separate process.

## Commit-to-frame latency of a history change

{table}
{extra}"""
    OUTPUT.write_text(text)


def _connections_section(connections: int, rows: list[dict]) -> str:
    return f"""
## {connections:,} idle SSE connections in one process

Each server is its own process; one client process on the same machine
holds every connection over loopback (`bench/edge.py` says how each figure
is taken). Broadcast times run from publishing one event to the moment the
client read it on the last (or the median) connection, median of 5 rounds.

{connections_table(rows)}
"""


def main() -> None:
    """Run the benchmarks, print the table and write it to BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000, help="sequential changes")
    parser.add_argument(
        "--baseline-changes", type=int, default=10, help="changes seen by polling"
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
    args = parser.parse_args()
    rows = asyncio.run(_latency_rows(args.changes, args.baseline_changes))
    table = _table(rows)
    print(table)
    extra = ""
    if args.connections > 0:
        edge_rows = asyncio.run(
            measure_connections(args.connections, args.tabs_per_user)
        )
        extra = _connections_section(args.connections, edge_rows)
        print(connections_table(edge_rows))
    _write(table, extra)
    print(f"written to {OUTPUT}")


if __name__ == "__main__":
    main()
