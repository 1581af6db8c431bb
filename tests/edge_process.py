"""Running `tidings edge` as a child process, as a deployment does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import httpx

from tidings.shared.settings import Settings

READY_TIMEOUT_SECONDS = 30.0


def edge_environment(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    """Environment of an edge child on `port`; `extra` adds TIDINGS_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=settings.database_url,
        TIDINGS_NATS_URL=settings.nats_url,
        TIDINGS_EDGE_PORT=str(port),
        TIDINGS_DRAIN_SECONDS="2",
        TIDINGS_KEEPALIVE_SECONDS="0.5",
        TIDINGS_LOG_FORMAT="json",
    )
    env.update({f"TIDINGS_{name.upper()}": value for name, value in extra.items()})
    return env


async def start_edge_process(
    settings: Settings, port: int, log: Path, **extra: str
) -> asyncio.subprocess.Process:
    """Start `python -m tidings.cli.main edge` and wait until it is ready."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings.cli.main",
            "edge",
            env=edge_environment(settings, port, **extra),
            stdout=output,
            stderr=output,
        )
    async with httpx.AsyncClient() as client:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            while True:
                if process.returncode is not None:
                    raise AssertionError(log.read_text()[-3000:])
                with contextlib.suppress(httpx.TransportError):
                    ready = await client.get(f"http://127.0.0.1:{port}/readyz")
                    if ready.status_code == 200:
                        return process
                await asyncio.sleep(0.05)
