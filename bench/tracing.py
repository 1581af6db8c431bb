"""Overhead of tracing on commit-to-frame latency: tracing off, then on.

Each configuration runs its own `tidings up` with the same settings, except
`TIDINGS_OTEL`. With tracing on, every service records its spans through
OpenTelemetry's SDK into an in-memory exporter, so the figure covers making,
propagating and ending spans, but not sending them to a collector (the OTLP
exporter sends from a background thread in batches).
"""

from __future__ import annotations

from bench.latency import measure_tidings, summarize
from bench.system import running_system

# Changes measured and thrown away first, so connection set-up and first-use
# costs do not land in either configuration's figures.
WARMUP_CHANGES = 20

CONFIGURATIONS = (
    ("Tracing off", {}),
    ("Tracing on (in-memory exporter)", {"TIDINGS_OTEL": "memory"}),
)


async def measure_tracing(changes: int, system_env: dict[str, str]) -> list[dict]:
    """Return latency rows of `changes` sequential changes, tracing off and on."""
    rows = []
    for name, env in CONFIGURATIONS:
        with running_system({**system_env, **env}) as endpoints:
            print(f"{name}: {changes} sequential changes", flush=True)
            await measure_tidings(endpoints, WARMUP_CHANGES)
            latencies = await measure_tidings(endpoints, changes)
        rows.append(summarize(f"{name}: UPDATE to SSE frame", latencies))
    return rows


def tracing_section(rows: list[dict], table: str) -> str:
    """Return the BENCHMARKS.md section of the tracing overhead."""
    off, on = rows[0], rows[-1]
    # Adding 0.0 turns a rounded -0.0 into 0.0.
    p50 = round(on["p50_ms"] - off["p50_ms"], 1) + 0.0
    p99 = round(on["p99_ms"] - off["p99_ms"], 1) + 0.0
    return f"""
## Overhead of tracing on commit-to-frame latency

Two runs of `tidings up` one after the other, alike but for `TIDINGS_OTEL`
(`bench/tracing.py`). With tracing on, the bridge, the enricher and the edge
each record one span per change into an in-memory exporter. p50 moves by
{p50:+.1f} ms and p99 by {p99:+.1f} ms.

{table}
"""
