"""The edge through a NATS restart and through its own SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.conftest import EdgeUnderTest, create_user
from tests.edge_process import start_edge_process
from tests.sse_client import SseStream, open_stream
from tidings.shared.embedded import EmbeddedNats, free_port
from tidings.shared.subjects import EVENTS_STREAM


async def _wait_for(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def _ids(stream: SseStream, count: int) -> list[str]:
    return [(await stream.next_event(timeout=20)).id or "" for _ in range(count)]


@pytest.fixture
def dedicated_nats(tmp_path: Path):
    """A NATS server of this test alone, which it may stop and start again."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def test_nats_restart_loses_nothing(dedicated_nats, start_edge, db):
    """Events stored around a NATS restart reach a connected stream once each,
    and a client that reconnects with its last id gets them all."""
    under_test: EdgeUnderTest = await start_edge(nats_url=dedicated_nats.url)
    edge = under_test.edge
    alice = await create_user(db, "alice")
    audience = f"user.{alice.id}"

    async with open_stream(under_test.stream_url, headers=alice.headers) as stay:
        await stay.wait_status()
        async with open_stream(under_test.stream_url, headers=alice.headers) as leave:
            await leave.wait_status()
            before = [await under_test.publish(audience, "history_update", b"{}")]
            last_seen = (await _ids(leave, 1))[0]

        dedicated_nats.stop()
        await _wait_for(lambda: not edge.nc.is_connected)
        async with httpx.AsyncClient() as client:
            unready = await client.get(f"{under_test.url}/readyz")
        dedicated_nats.start()
        await _wait_for(lambda: under_test.nc.is_connected)
        during = [
            await under_test.publish(audience, "history_update", b"{}")
            for _ in range(5)
        ]
        await _wait_for(edge.is_ready)
        after = [
            await under_test.publish(audience, "history_update", b"{}")
            for _ in range(5)
        ]
        stayed = await _ids(stay, 1 + len(during) + len(after))
        await asyncio.sleep(0.2)
        extra = stay.frames.qsize()

    headers = {**alice.headers, "last-event-id": last_seen}
    async with open_stream(under_test.stream_url, headers=headers) as back:
        resumed = await _ids(back, len(during) + len(after))

    expected = [under_test.event_id(s) for s in before + during + after]
    assert unready.status_code == 503
    assert stayed == expected
    assert extra == 0
    assert resumed == expected[1:]


async def test_sigterm_drains_within_grace(settings, db, tmp_path):
    """On SIGTERM the edge refuses new connections, ends its streams spread
    over the drain window, and exits in time."""
    port = free_port()
    process = await start_edge_process(settings, port, tmp_path / "edge.log")
    alice = await create_user(db, "alice")
    url = f"http://127.0.0.1:{port}/api/events/stream"
    ended: list[float] = []

    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(open_stream(url, headers=alice.headers))
            for _ in range(12)
        ]
        for stream in streams:
            await stream.wait_status()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await _wait_for(lambda: _refuses_connections(port), timeout=5)
        for stream in streams:
            async with asyncio.timeout(10):
                await stream.closed.wait()
            ended.append(time.monotonic() - started)
    async with asyncio.timeout(15):
        code = await process.wait()
    exited = time.monotonic() - started

    assert code == 0
    assert max(ended) < 2 + 3
    assert max(ended) - min(ended) >= 0.5
    assert exited < 2 + 8


def _refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_live_gap_filled_from_stream(edge: EdgeUnderTest, db):
    """Events the live subject never carried are replayed before the next one."""
    alice = await create_user(db, "alice")
    audience = f"user.{alice.id}"
    js = edge.nc.jetstream()
    config = (await js.stream_info(EVENTS_STREAM)).config

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        first = await edge.publish(audience, "history_update", b"{}")
        await js.update_stream(replace(config, republish=None))
        unseen = [
            await edge.publish(audience, "history_update", b"{}") for _ in range(3)
        ]
        await js.update_stream(config)
        last = await edge.publish(audience, "history_update", b"{}")
        received = await _ids(stream, 5)

    assert received == [edge.event_id(s) for s in [first, *unseen, last]]
