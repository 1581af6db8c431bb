"""Protecting the edge: released resources, slow clients cut off, stream limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import httpx
from prometheus_client import REGISTRY

from tests.conftest import EdgeUnderTest, User, create_user
from tests.sse_client import open_stream


async def _wait_for(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def _open_raw(edge: EdgeUnderTest, user: User, receive_buffer: int = 0):
    """Open a stream on a plain socket and read its head; return the socket."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", edge.settings.edge_port))
    request = (
        f"GET /api/events/stream?key={user.api_key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    received = b""
    async with asyncio.timeout(10):
        while b"notification_status" not in received:
            received += await loop.sock_recv(sock, 65536)
    assert received.startswith(b"HTTP/1.1 200 OK")
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashed client or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_hundred_clients_leave_nothing_behind(edge: EdgeUnderTest, db):
    """100 streams that close, half of them abruptly, leave no subscription."""
    users = [await create_user(db, f"user{i}") for i in range(10)]
    hub, endpoint = edge.edge.hub, edge.edge.endpoint
    nats_subscriptions = len(edge.edge.nc._subs)  # the client's own registry

    async with contextlib.AsyncExitStack() as stack:
        for index in range(50):
            user = users[index % 10]
            stream = await stack.enter_async_context(
                open_stream(edge.stream_url, headers=user.headers)
            )
            await stream.wait_status()
        raw = [await _open_raw(edge, users[i % 10]) for i in range(50)]
        assert endpoint.stream_count == 100
        assert hub.subscription_count == 11
        for sock in raw:
            _reset(sock)
        await _wait_for(lambda: endpoint.stream_count == 50)
    await _wait_for(lambda: endpoint.stream_count == 0)
    await _wait_for(lambda: len(edge.edge.nc._subs) == nats_subscriptions)

    assert hub.subscription_count == 0
    assert hub.connection_count == 0
    assert endpoint.limits.total == 0
    assert endpoint.streams() == set()


async def test_slow_client_cut_off_others_served(start_edge, db):
    """A client that stops reading is cut off while another keeps receiving."""
    under_test = await start_edge(queue_size=8)
    endpoint = under_test.edge.endpoint
    cut_before = REGISTRY.get_sample_value("tidings_edge_slow_clients_cut_total") or 0
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")
    payload = b'{"pad":"' + b"x" * 32_000 + b'"}'
    slow = await _open_raw(under_test, bob, receive_buffer=4096)

    async with open_stream(under_test.stream_url, headers=alice.headers) as fast:
        await fast.wait_status()
        sequences = [
            await under_test.publish("all", "broadcast_update", payload)
            for _ in range(400)
        ]
        received = [await fast.next_event() for _ in sequences]
        await _wait_for(lambda: endpoint.stream_count == 1)

    assert [f.id for f in received] == [under_test.event_id(s) for s in sequences]
    assert all(f.data == payload.decode() for f in received)
    assert await _read_until_closed(slow) < len(payload) * len(sequences)
    cut = REGISTRY.get_sample_value("tidings_edge_slow_clients_cut_total") - cut_before
    assert cut == 1


async def _read_until_closed(sock: socket.socket) -> int:
    """Read a socket until the server's end; return how many bytes came."""
    loop = asyncio.get_running_loop()
    total = 0
    try:
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 65536):
                total += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return total


async def test_per_user_limit_gets_429(start_edge, db):
    """A user past the per-user limit gets 429; others, and later streams, pass."""
    under_test = await start_edge(max_streams_per_user=2)
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")

    async with (
        open_stream(under_test.stream_url, headers=alice.headers) as first,
        open_stream(under_test.stream_url, headers=alice.headers) as second,
    ):
        await first.wait_status()
        await second.wait_status()
        async with httpx.AsyncClient() as client:
            refused = await client.get(under_test.stream_url, headers=alice.headers)
        async with open_stream(under_test.stream_url, headers=bob.headers) as other:
            bob_status = await other.wait_status()
    await _wait_for(lambda: under_test.edge.endpoint.stream_count == 0)
    async with open_stream(under_test.stream_url, headers=alice.headers) as later:
        later_status = await later.wait_status()

    assert refused.status_code == 429
    assert refused.json()["reason"] == "too_many_streams"
    assert "TIDINGS_MAX_STREAMS_PER_USER" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert bob_status.event == "notification_status"
    assert later_status.event == "notification_status"


async def test_edge_limit_gets_429(start_edge, db):
    """Past the edge's total limit every caller gets 429 `edge_full`."""
    under_test = await start_edge(max_streams=1)
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")

    async with open_stream(under_test.stream_url, headers=alice.headers) as first:
        await first.wait_status()
        async with httpx.AsyncClient() as client:
            refused = await client.get(under_test.stream_url, headers=bob.headers)

    assert refused.status_code == 429
    assert refused.json()["reason"] == "edge_full"
    assert "TIDINGS_MAX_STREAMS" in refused.json()["detail"]
