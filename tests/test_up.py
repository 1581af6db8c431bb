"""`tidings up` runs the whole system from an empty folder and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from tests.sse_client import open_stream
from tidings.shared.embedded import free_port

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 40.0
# `tidings up` kills a child that has not stopped 20 s after SIGTERM; a clean
# stop takes a few seconds, so a stop slower than this means a child hung.
CLEAN_STOP_SECONDS = 15.0


def _start_up(data_dir: Path, log_path: Path) -> subprocess.Popen:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TIDINGS_")
    }
    for service in ("EDGE", "API", "BRIDGE", "ENRICHER"):
        env[f"TIDINGS_{service}_PORT"] = str(free_port())
    env["TIDINGS_LOG_FORMAT"] = "json"
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
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
    finally:
        log.close()


async def _wait_for_endpoints(path: Path, proc: subprocess.Popen, log: Path) -> dict:
    async with asyncio.timeout(START_TIMEOUT_SECONDS):
        while not path.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
    return json.loads(path.read_text())


async def _stop(proc: subprocess.Popen) -> int:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
        while proc.poll() is None:
            await asyncio.sleep(0.1)
    assert time.monotonic() - started < CLEAN_STOP_SECONDS
    return proc.returncode


async def _deliver_change(endpoints: dict) -> None:
    alice = next(u for u in endpoints["users"] if u["histories"])
    history_id = alice["histories"][0]["id"]
    headers = {"x-api-key": alice["api_key"]}
    async with open_stream(endpoints["stream_url"], headers=headers) as stream:
        conn = await asyncpg.connect(endpoints["database_url"])
        try:
            await conn.execute(
                "UPDATE history SET name = 'renamed by SQL' WHERE id = $1", history_id
            )
        finally:
            await conn.close()
        frame = await stream.next_event(timeout=20)
        # Stop while the enricher waits in a fetch, as it does when idle.
        await asyncio.sleep(1.5)
    assert frame.event == "history_update"
    assert json.loads(frame.data)["history_ids"] == [str(history_id)]


def _kill_child(proc: subprocess.Popen, service: str) -> None:
    """Kill one service process of `tidings up` at once, as a crash would."""
    for child in psutil.Process(proc.pid).children():
        if child.cmdline()[-1:] == [service]:
            child.kill()
            child.wait(10)
            return
    raise AssertionError(f"no {service} process under tidings up")


async def test_up_serves_and_stops(tmp_path: Path):
    """`tidings up` writes endpoints.json, streams a change, stops on SIGTERM."""
    data_dir = tmp_path / "data"
    log = tmp_path / "up.log"
    proc = _start_up(data_dir, log)
    try:
        endpoints = await _wait_for_endpoints(data_dir / "endpoints.json", proc, log)
        await _deliver_change(endpoints)
        for service in ("enricher", "bridge"):
            _kill_child(proc, service)
            await _deliver_change(endpoints)
    finally:
        code = await _stop(proc)

    assert code == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "tidings up: stopped" in output
    assert "enricher exited with code -9; starting it again" in output
    for service in ("bridge", "enricher", "edge", "api"):
        assert f'"{service} stopped"' in output, service
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    keys = {u["email"]: u["api_key"] for u in endpoints["users"]}
    assert set(keys) == {"admin@example.org", "alice@example.org", "bob@example.org"}
    assert endpoints["demo_url"].endswith("/demo")
    assert endpoints["anonymous_session"]["history_id"] is not None

    (data_dir / "endpoints.json").unlink()
    proc = _start_up(data_dir, log)
    try:
        again = await _wait_for_endpoints(data_dir / "endpoints.json", proc, log)
        await _deliver_change(again)
    finally:
        code = await _stop(proc)

    assert code == 0
    assert {u["email"]: u["api_key"] for u in again["users"]} == keys
