"""Many idle SSE clients in one process, driven over stdin and stdout.

Run as `python -m bench.sse_clients HOST PORT TARGETS READY`, where TARGETS
is a file with one request path per line (one connection each) and READY
the bytes that show a stream is open. Commands, one per line on stdin:

- `open CONCURRENCY`: open every connection; prints `{"open": n, "failed": n}`;
- `wait MARKER`: prints `{"armed": n}` once it watches for MARKER, then
  waits until every connection received it and prints the monotonic time
  of the first and last arrival and the median;
- `quit`: close everything and exit.

Times are `time.monotonic()`, which is one clock for every process on Linux.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import uvloop

_TIMEOUT_SECONDS = 120.0


class _Arrivals:
    """Arrival times of one marker, and a future set when all have arrived."""

    def __init__(self, expected: int):
        self.expected = expected
        self.times: list[float] = []
        self.done = asyncio.get_running_loop().create_future()

    def note(self) -> None:
        self.times.append(time.monotonic())
        if len(self.times) == self.expected and not self.done.done():
            self.done.set_result(None)


class _Client(asyncio.Protocol):
    __slots__ = ("arrivals", "marker", "ready", "ready_bytes", "tail", "transport")

    def __init__(self, ready_bytes: bytes):
        self.ready_bytes = ready_bytes
        self.ready = asyncio.get_running_loop().create_future()
        self.tail = b""
        self.marker: bytes | None = None
        self.arrivals: _Arrivals | None = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # The tail of the previous chunk catches a marker split across two.
        seen = self.tail + data
        self.tail = data[-256:]
        if not self.ready.done() and self.ready_bytes in seen:
            self.ready.set_result(None)
        marker = self.marker
        if marker is not None and marker in seen:
            self.marker = None
            self.tail = b""
            assert self.arrivals is not None
            self.arrivals.note()

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("stream closed"))
        arrivals = self.arrivals
        if self.marker is not None and arrivals and not arrivals.done.done():
            arrivals.done.set_exception(ConnectionError("stream closed"))


async def _open(host, port, path, ready, clients, limit) -> bool:
    loop = asyncio.get_running_loop()
    async with limit:
        try:
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                _, client = await loop.create_connection(
                    lambda: _Client(ready), host, port
                )
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                request += "Accept: text/event-stream\r\n\r\n"
                client.transport.write(request.encode())
                await client.ready
        except (OSError, TimeoutError, ConnectionError):
            return False
    clients.append(client)
    return True


async def _wait(clients: list[_Client], marker: bytes) -> dict:
    arrivals = _Arrivals(len(clients))
    for client in clients:
        client.arrivals = arrivals
        client.tail = b""
        client.marker = marker
    print(json.dumps({"armed": len(clients)}), flush=True)
    async with asyncio.timeout(_TIMEOUT_SECONDS):
        await arrivals.done
    times = arrivals.times
    return {"first": min(times), "last": max(times), "median": statistics.median(times)}


def _read_paths(targets: str) -> list[str]:
    with open(targets) as file:
        return [line.strip() for line in file if line.strip()]


async def _main() -> None:
    host, port, targets, ready = sys.argv[1:5]
    paths = _read_paths(targets)
    clients: list[_Client] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := (await reader.readline()).decode().strip():
        command, _, argument = line.partition(" ")
        if command == "open":
            limit = asyncio.Semaphore(int(argument))
            opening = [
                _open(host, int(port), path, ready.encode(), clients, limit)
                for path in paths
            ]
            results = await asyncio.gather(*opening)
            answer = {"open": sum(results), "failed": len(results) - sum(results)}
        elif command == "wait":
            answer = await _wait(clients, argument.encode())
        else:
            break
        print(json.dumps(answer), flush=True)
    for client in clients:
        if client.transport is not None:
            client.transport.close()


if __name__ == "__main__":
    uvloop.run(_main())
