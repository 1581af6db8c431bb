"""Idle SSE connections per edge process, their memory, and broadcast fan-out.

Each server runs as its own process on loopback against embedded Postgres
and NATS; a separate client process (`bench.sse_clients`) opens the
connections and watches them. Memory per connection is the growth of the
server's resident set from before the first connection to after the last,
divided by the number of connections. Broadcast time runs from publishing
one event to `tidings.event.all` until the last connection received it.
Both servers subscribe to `tidings.live.all`, where the stream republishes
it. The median over `BROADCAST_ROUNDS` rounds is reported.

The servers:
- Tidings: `tidings edge`; each connection uses a stream token of its own
  user (`tabs_per_user` connections share one), so the edge also keeps one
  NATS subscription per user.
- Baseline: `bench.naive_sse`, Litestar's `ServerSentEvent` with one
  `asyncio.Queue` per connection and a fan-out loop, under the same uvicorn,
  uvloop and httptools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import httpx
import nats

from bench.system import migrated_servers
from tidings.edge.tokens import TokenSigner
from tidings.shared.embedded import free_port
from tidings.shared.nats import ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.subjects import ALL_AUDIENCE, event_subject, user_audience

BROADCAST_ROUNDS = 5
OPEN_CONCURRENCY = 200
STEP_TIMEOUT_SECONDS = 300.0
SETTLE_SECONDS = 2.0
_TOKEN_SECRET = "bench-token-secret-0123456789"


def raise_fd_limit(needed: int) -> int:
    """Raise the open-file limit, which children inherit, up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def resident_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def measure_connections(connections: int, tabs_per_user: int = 1) -> list[dict]:
    """Measure Tidings and the naive baseline with `connections` idle streams."""
    limit = raise_fd_limit(connections + 1000)
    if limit < connections + 100:
        print(f"  open-file limit {limit} is below {connections} connections")
    async with migrated_servers("tidings-bench-edge-", fast=True) as (
        root,
        postgres,
        nats_server,
    ):
        settings = Settings(database_url=postgres.url, nats_url=nats_server.url)
        nc = await nats.connect(settings.nats_url)
        await ensure_streams(nc.jetstream(), settings)
        try:
            tidings = await _measure_tidings(
                settings, nc, root, connections, tabs_per_user
            )
            baseline = await _measure_baseline(settings, nc, root, connections)
        finally:
            await nc.close()
    return [tidings, baseline]


async def _measure_tidings(
    settings: Settings, nc, root: Path, connections: int, tabs_per_user: int
) -> dict:
    port = free_port()
    signer = TokenSigner(_TOKEN_SECRET, 3600)
    users = max(1, connections // tabs_per_user)
    paths = [
        "/api/events/stream?token="
        + signer.mint(user_audience(i % users + 1), i % users + 1)
        for i in range(connections)
    ]
    env = {
        "TIDINGS_DATABASE_URL": settings.database_url,
        "TIDINGS_NATS_URL": settings.nats_url,
        "TIDINGS_EDGE_PORT": str(port),
        "TIDINGS_TOKEN_SECRET": _TOKEN_SECRET,
        "TIDINGS_MAX_STREAMS": str(connections + 100),
        "TIDINGS_MAX_STREAMS_PER_USER": str(tabs_per_user),
        "TIDINGS_DRAIN_SECONDS": "1",
        "TIDINGS_LOG_LEVEL": "WARNING",
        "TIDINGS_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "tidings.cli.main", "edge"]
    name = f"Tidings edge ({tabs_per_user} tab(s) per user)"
    return await _measure(
        name, command, env, port, "/readyz", paths, "notification_status", nc, root
    )


async def _measure_baseline(
    settings: Settings, nc, root: Path, connections: int
) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "bench.naive_sse", str(port), settings.nats_url]
    paths = ["/stream"] * connections
    name = "Baseline: Litestar ServerSentEvent, queue per connection"
    return await _measure(name, command, {}, port, "/stream", paths, "retry:", nc, root)


async def _measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    paths: list[str],
    ready_marker: str,
    nc,
    root: Path,
) -> dict:
    print(f"{name}: {len(paths)} connections", flush=True)
    log = (root / f"server-{port}.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        *command, env=_environment(env), stdout=log, stderr=log
    )
    client = None
    try:
        await _wait_until_serving(server, port, ready_path)
        before = resident_bytes(server.pid)
        targets = root / f"targets-{port}.txt"
        targets.write_text("\n".join(paths) + "\n")
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse_clients",
            "127.0.0.1",
            str(port),
            str(targets),
            ready_marker,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        started = time.monotonic()
        opened = await _ask(client, f"open {OPEN_CONCURRENCY}")
        open_seconds = time.monotonic() - started
        print(f"  open: {opened} in {open_seconds:.1f} s", flush=True)
        await asyncio.sleep(SETTLE_SECONDS)
        after = resident_bytes(server.pid)
        latencies, medians = await _broadcast_rounds(client, nc)
        print(f"  broadcast to all, last arrival: {latencies} ms", flush=True)
    finally:
        if client is not None:
            with contextlib.suppress(ProcessLookupError, BrokenPipeError):
                client.stdin.write(b"quit\n")
                await client.stdin.drain()
            await _stop(client)
        await _stop(server)
        log.close()
    return {
        "name": name,
        "connections": opened["open"],
        "failed": opened["failed"],
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "kib_per_connection": (after - before) / max(1, opened["open"]) / 1024,
        "broadcast_last_ms": statistics.median(latencies),
        "broadcast_median_ms": statistics.median(medians),
        "open_seconds": open_seconds,
    }


async def _broadcast_rounds(client, nc) -> tuple[list[float], list[float]]:
    js = nc.jetstream()
    latencies, medians = [], []
    for round_number in range(BROADCAST_ROUNDS):
        marker = f"bench-broadcast-{round_number}-{time.monotonic_ns()}"
        armed = await _ask(client, f"wait {marker}")
        assert "armed" in armed, armed
        published = time.monotonic()
        await js.publish(
            event_subject(ALL_AUDIENCE),
            json.dumps({"marker": marker}).encode(),
            headers={"Tidings-Event": "broadcast_update"},
        )
        arrived = await _read(client)
        latencies.append(round((arrived["last"] - published) * 1000, 1))
        medians.append(round((arrived["median"] - published) * 1000, 1))
    return latencies, medians


async def _ask(client, command: str) -> dict:
    client.stdin.write(command.encode() + b"\n")
    await client.stdin.drain()
    return await _read(client)


async def _read(client) -> dict:
    async with asyncio.timeout(STEP_TIMEOUT_SECONDS):
        line = await client.stdout.readline()
    if not line:
        raise RuntimeError("benchmark client exited")
    return json.loads(line)


async def _wait_until_serving(server, port: int, path: str) -> None:
    url = f"http://127.0.0.1:{port}{path}"
    async with httpx.AsyncClient() as http:
        async with asyncio.timeout(60):
            while True:
                if server.returncode is not None:
                    raise RuntimeError(f"server exited with {server.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    async with http.stream("GET", url) as response:
                        if response.status_code == 200:
                            return
                await asyncio.sleep(0.1)


async def _stop(process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(30):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def _environment(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(extra)
    return env


def table(rows: list[dict]) -> str:
    """Format the rows as a Markdown table."""
    lines = [
        "| server | connections held | KiB per idle connection "
        "| broadcast to all, last (ms) | broadcast, median (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        held = f"{row['connections']}"
        if row["failed"]:
            held += f" ({row['failed']} failed)"
        lines.append(
            f"| {row['name']} | {held} | {row['kib_per_connection']:.1f} "
            f"| {row['broadcast_last_ms']:.1f} | {row['broadcast_median_ms']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    tabs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(table(asyncio.run(measure_connections(count, tabs))))
