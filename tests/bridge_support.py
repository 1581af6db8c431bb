"""Helpers for bridge tests: what `TIDINGS_CHANGES` holds, and bridge processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from tidings.shared.events import Change, change_decoder
from tidings.shared.settings import Settings
from tidings.shared.subjects import CHANGE_PREFIX, CHANGES_STREAM, change_subject


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    """Wait until `condition()` is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class ChangeLog:
    """Reads what `TIDINGS_CHANGES` holds."""

    def __init__(self, js: JetStreamContext):
        self.js = js

    async def subjects(self) -> dict[str, int]:
        """Return the number of stored messages per subject."""
        try:
            info = await self.js.stream_info(CHANGES_STREAM, subjects_filter=">")
        except NotFoundError:
            return {}
        return info.state.subjects or {}

    async def has(self, kind: str, key: object) -> bool:
        """Whether the stream contains a change of this key."""
        return await self.last(kind, key) is not None

    async def last(self, kind: str, key: object) -> Change | None:
        """Return the last stored change of one key."""
        try:
            subject = change_subject(kind, str(key))
            msg = await self.js.get_last_msg(CHANGES_STREAM, subject)
        except NotFoundError:
            return None
        return change_decoder.decode(msg.data)

    async def all(self) -> list[Change]:
        """Return every stored change, in stream order."""
        try:
            info = await self.js.stream_info(CHANGES_STREAM)
        except NotFoundError:
            return []
        count = info.state.messages
        if count == 0:
            return []
        subscription = await self.js.subscribe(
            f"{CHANGE_PREFIX}.>",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        changes = []
        try:
            while len(changes) < count:
                msg = await subscription.next_msg(timeout=10)
                changes.append(change_decoder.decode(msg.data))
        finally:
            await subscription.unsubscribe()
        return changes

    async def by_key(self) -> dict[tuple[str, str], list[datetime]]:
        """Return the commit times stored for each key, in stream order."""
        times: dict[tuple[str, str], list[datetime]] = {}
        for change in await self.all():
            times.setdefault((change.kind, change.key), []).append(change.commit_time)
        return times

    async def wait_for_count(self, subjects: int, timeout: float) -> None:
        """Wait until at least `subjects` distinct subjects are stored."""

        async def enough() -> bool:
            return len(await self.subjects()) >= subjects

        await wait_until(enough, timeout, f"{subjects} distinct changes in the stream")


async def audit_times(db: asyncpg.Pool) -> dict[tuple[str, str], datetime]:
    """Return the newest audit time of every key in both audit tables (aware UTC)."""
    rows = await db.fetch(
        """SELECT 'history' AS kind, history_id::text AS key, max(update_time) AS time
        FROM history_audit GROUP BY history_id
        UNION ALL
        SELECT kind, key, max(change_time) FROM tidings_change_audit
        GROUP BY kind, key"""
    )
    return {(r["kind"], r["key"]): r["time"].replace(tzinfo=UTC) for r in rows}


async def wait_for_audit_times(
    db: asyncpg.Pool, log: ChangeLog, timeout: float
) -> dict[tuple[str, str], datetime]:
    """Wait until the stream's last change of every audited key has its newest time."""
    expected = await audit_times(db)

    async def caught_up() -> bool:
        stored = await log.by_key()
        return all(stored.get(key, [None])[-1] == t for key, t in expected.items())

    await wait_until(caught_up, timeout, f"{len(expected)} keys at their newest time")
    return expected


class BridgeProcess:
    """A bridge run as `python -m tidings.cli.main bridge`, as in production."""

    def __init__(self, settings: Settings, log_path: Path):
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the process; it logs JSON lines to `log_path`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            TIDINGS_DATABASE_URL=self.settings.database_url,
            TIDINGS_NATS_URL=self.settings.nats_url,
            TIDINGS_BRIDGE_PORT=str(self.settings.bridge_port),
            TIDINGS_LOG_FORMAT="json",
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidings.cli.main", "bridge"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.bridge_port}/healthz"

    async def health(self) -> dict | None:
        """Return the `/healthz` body, or None while the process does not respond."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(self.health_url)
        except httpx.HTTPError:
            return None
        return response.json()

    async def metric(self, name: str) -> float | None:
        """Return the value of one sample of `/metrics`, or None when absent."""
        url = f"http://127.0.0.1:{self.settings.bridge_port}/metrics"
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(url)
        return metric_value(response.text, name)

    async def wait_for_role(self, role: str, timeout: float) -> dict:
        """Wait until `/healthz` reports `role`; return the body."""
        body: dict | None = None

        async def has_role() -> bool:
            nonlocal body
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bridge exited: {self.log_tail()}")
            body = await self.health()
            return body is not None and body["role"] == role

        await wait_until(has_role, timeout, f"bridge role {role}")
        assert body is not None
        return body

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop the process with SIGTERM, or SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of the process's log."""
        return self.log_path.read_text(errors="replace")[-chars:]


def metric_value(text: str, name: str) -> float | None:
    """Return the value of the sample `name` in Prometheus text, or None."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    return None


class FreezableProxy:
    """A TCP proxy whose open connections can be frozen.

    A frozen connection stays open at both ends but silently drops every
    byte, as a network that loses all packets leaves a connection half-open.
    Connections opened after the freeze work normally.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[dict] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def freeze(self) -> int:
        """Freeze every open connection; return how many were frozen."""
        for link in self._links:
            link["frozen"] = True
        return len(self._links)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _accept(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        link = {"frozen": False}
        self._links.append(link)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pump(reader, upstream_writer, link),
            self._pump(upstream_reader, writer, link),
            return_exceptions=True,
        )

    @staticmethod
    async def _pump(reader, writer, link: dict) -> None:
        while data := await reader.read(65536):
            if not link["frozen"]:
                writer.write(data)
                await writer.drain()
