"""Running `tidings up` as a child process for benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidings.shared.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from tidings.shared.migrate import upgrade


@contextlib.contextmanager
def running_system(extra_env: dict[str, str] | None = None):
    """Start `tidings up` in a temporary folder; yield its endpoints."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        for service in ("EDGE", "API", "BRIDGE", "ENRICHER"):
            env[f"TIDINGS_{service}_PORT"] = str(free_port())
        env["TIDINGS_LOG_LEVEL"] = "WARNING"
        env.update(extra_env or {})
        log = open(Path(tmp) / "up.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings.cli.main",
                "up",
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            endpoints_file = data_dir / "endpoints.json"
            deadline = time.monotonic() + 120
            while not endpoints_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "up.log").read_text()[-2000:])
                time.sleep(0.1)
            yield json.loads(endpoints_file.read_text())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            log.close()


@contextlib.asynccontextmanager
async def migrated_servers(prefix: str, *, fast: bool):
    """Start embedded Postgres (migrated) and NATS in a temporary folder.

    Yields the folder and both servers, and stops them afterwards. `fast`
    turns off Postgres' fsync, for benchmarks that do not measure commits.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        postgres = EmbeddedPostgres(root / "postgres", fast=fast)
        nats_server = EmbeddedNats(root / "nats")
        postgres.start()
        nats_server.start()
        try:
            # Alembic runs its own event loop, so it must not run in this one.
            await asyncio.to_thread(upgrade, postgres.url)
            yield root, postgres, nats_server
        finally:
            nats_server.stop()
            postgres.stop()
