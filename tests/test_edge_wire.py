"""The stream on the wire: exact payloads, framing, headers and bad requests."""

from __future__ import annotations

import asyncio
import json

import httpx
import msgspec

from tests.conftest import EdgeUnderTest, create_user
from tests.sse_client import open_stream

PAYLOADS = [
    "\n\n\n",
    "a\r\nb",
    "",
    ": x",
    "\r",
    "data: not a field",
    "emoji 🎉 and ünïcödé and 中文",
    "x" * 65536,
]


async def test_payload_texts_arrive_exactly(edge: EdgeUnderTest, db):
    """Texts with line breaks, colons, emoji or 64 KB arrive exactly as sent."""
    alice = await create_user(db, "alice")

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        for text in PAYLOADS:
            data = msgspec.json.encode({"text": text})
            await edge.publish(f"user.{alice.id}", "history_update", data)
        frames = [await stream.next_event() for _ in PAYLOADS]

    for text, frame in zip(PAYLOADS, frames, strict=True):
        assert frame.event == "history_update"
        assert json.loads(frame.data) == {"text": text}


async def test_raw_data_lines_are_not_comments(edge: EdgeUnderTest, db):
    """Data starting with a colon or with blank lines stays data, not comments."""
    alice = await create_user(db, "alice")

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        await edge.publish(f"user.{alice.id}", "history_update", b": x")
        await edge.publish(f"user.{alice.id}", "history_update", b"\n\n\n")
        first = await stream.next_event()
        second = await stream.next_event()

    assert first.data == ": x"
    assert second.data == "\n\n\n"
    assert ": x" not in stream.comments


async def test_invalid_event_name_dropped(edge: EdgeUnderTest, db):
    """An event whose name is not printable ASCII is dropped; the next arrives."""
    alice = await create_user(db, "alice")

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        await edge.publish(f"user.{alice.id}", "has space", b"{}")
        sequence = await edge.publish(f"user.{alice.id}", "history_update", b"{}")
        frame = await stream.next_event()

    assert frame.event == "history_update"
    assert frame.id == edge.event_id(sequence)


async def test_keepalive_interval_configurable(start_edge, db):
    """Keepalives come at the configured interval as comments, never as events."""
    under_test = await start_edge(keepalive_seconds=0.2)
    alice = await create_user(db, "alice")

    async with open_stream(under_test.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        async with asyncio.timeout(10):
            while len(stream.comments) < 3:
                await asyncio.sleep(0.05)

    assert set(stream.comments) == {"keepalive"}
    assert stream.frames.empty()


async def test_no_compression_and_proxy_headers(edge: EdgeUnderTest, db):
    """The stream is never compressed, and asks proxies not to buffer it."""
    alice = await create_user(db, "alice")
    headers = {**alice.headers, "accept-encoding": "gzip, br, deflate"}

    async with open_stream(edge.stream_url, headers=headers) as stream:
        await stream.wait_status()
        response_headers = stream.response.headers

    assert "content-encoding" not in response_headers
    assert response_headers["cache-control"] == "no-cache"
    assert response_headers["x-accel-buffering"] == "no"
    assert response_headers["content-type"] == "text/event-stream; charset=utf-8"


async def test_wrong_method_gets_405(edge: EdgeUnderTest):
    """A POST to the stream path gets 405 naming the allowed methods."""
    async with httpx.AsyncClient() as client:
        response = await client.post(edge.stream_url)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, OPTIONS"
    assert "use GET" in response.json()["detail"]


async def test_oversized_head_gets_431(edge: EdgeUnderTest):
    """A request head over 16 KiB is refused with 431, not a stream."""
    async with httpx.AsyncClient() as client:
        response = await client.get(edge.stream_url, headers={"x-big": "y" * 20000})

    assert response.status_code == 431
    assert "16 KiB" in response.json()["detail"]


async def test_other_routes_still_served(edge: EdgeUnderTest):
    """Requests for other paths reach the Litestar app on the same port."""
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{edge.url}/healthz")
        ready = await client.get(f"{edge.url}/readyz")
        script = await client.get(f"{edge.url}/static/tidings.js")
        missing = await client.get(f"{edge.url}/api/events/streams")

    assert health.json() == {"status": "ok"}
    assert health.headers["connection"] == "close"
    assert ready.status_code == 200
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert missing.status_code == 404


async def test_cors_allowed_origin(start_edge, db):
    """An allowed origin gets CORS headers with credentials; others get 403."""
    under_test = await start_edge(cors_origins="http://app.example")
    alice = await create_user(db, "alice")
    allowed = {**alice.headers, "origin": "http://app.example"}
    other = {**alice.headers, "origin": "http://evil.example"}

    async with open_stream(under_test.stream_url, headers=allowed) as stream:
        await stream.wait_status()
        cors_headers = stream.response.headers
    async with httpx.AsyncClient() as client:
        refused = await client.get(under_test.stream_url, headers=other)
        preflight = await client.options(
            under_test.stream_url,
            headers={
                "origin": "http://app.example",
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization",
            },
        )

    assert cors_headers["access-control-allow-origin"] == "http://app.example"
    assert cors_headers["access-control-allow-credentials"] == "true"
    assert refused.status_code == 403
    assert refused.json()["reason"] == "origin_not_allowed"
    assert preflight.status_code == 204
    assert "authorization" in preflight.headers["access-control-allow-headers"]
