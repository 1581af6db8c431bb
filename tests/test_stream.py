"""The SSE endpoint: authentication, framing and keepalives on the wire."""

from __future__ import annotations

import httpx

from tests.conftest import Pipeline, create_history, create_user
from tests.sse_client import open_stream


async def test_missing_key_gets_401(pipeline: Pipeline):
    """A stream request without an API key gets 401 with a JSON reason."""
    async with httpx.AsyncClient() as client:
        response = await client.get(pipeline.stream_url)

    assert response.status_code == 401
    assert "API key" in response.json()["detail"]


async def test_wrong_key_gets_401(pipeline: Pipeline):
    """A stream request with an unknown API key gets 401, not a stream."""
    async with httpx.AsyncClient() as client:
        by_header = await client.get(
            pipeline.stream_url, headers={"x-api-key": "f" * 32}
        )
        by_query = await client.get(pipeline.stream_url, params={"key": "nope"})

    assert by_header.status_code == 401
    assert by_query.status_code == 401
    assert by_header.headers["content-type"].startswith("application/json")


async def test_deleted_key_gets_401(pipeline: Pipeline):
    """A deleted API key no longer opens a stream."""
    alice = await create_user(pipeline.db, "alice")
    await pipeline.db.execute("UPDATE api_keys SET deleted = true")

    async with httpx.AsyncClient() as client:
        response = await client.get(pipeline.stream_url, headers=alice.headers)

    assert response.status_code == 401


async def test_stream_headers_and_retry(pipeline: Pipeline):
    """The stream starts with `retry:` and carries proxy-friendly headers."""
    alice = await create_user(pipeline.db, "alice")

    async with open_stream(pipeline.stream_url, params={"key": alice.api_key}) as s:
        await _wait_for(lambda: s.retries)
        headers = s.response.headers

    assert s.first_line == "retry: 1500"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in headers


async def test_keepalive_comment_not_event(pipeline: Pipeline):
    """Keepalives arrive as comments and never as events."""
    alice = await create_user(pipeline.db, "alice")
    history = await create_history(pipeline.db, alice)
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await _wait_for(lambda: len(stream.comments) >= 2)
        assert stream.frames.empty()
        await pipeline.db.execute(
            "UPDATE history SET name = 'y' WHERE id = $1", history
        )
        frame = await stream.next_event()

    assert stream.comments[0] == "keepalive"
    assert frame.event == "history_update"
    assert frame.id is not None and "." in frame.id


async def test_event_ids_increase(pipeline: Pipeline):
    """Event ids are `<epoch>.<sequence>` with one epoch and rising sequences."""
    alice = await create_user(pipeline.db, "alice")
    history = await create_history(pipeline.db, alice)
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        ids = []
        for _ in range(3):
            await pipeline.db.execute(
                "UPDATE history SET name = name || 'z' WHERE id = $1", history
            )
            ids.append((await stream.next_event()).id)

    epochs = {i.split(".")[0] for i in ids}
    sequences = [int(i.split(".")[1]) for i in ids]
    assert len(epochs) == 1
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 3


async def _wait_for(condition, timeout: float = 10.0) -> None:
    import asyncio

    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
