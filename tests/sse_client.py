"""A small SSE client for tests: parses frames off the wire per the WHATWG spec.

Unlike a browser it also records comments and `retry:` fields, so tests can
check keepalives and the reconnection delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httpx


@dataclass
class Frame:
    """One dispatched event, or a comment when `comment` is set."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comment: str | None = None


@dataclass
class SseStream:
    """An open SSE response whose frames are read into a queue in the background."""

    response: httpx.Response
    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    comments: list[str] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)
    first_line: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # When set, the first `notification_status` frame is kept here instead of
    # being queued, so tests of other events need not skip it.
    divert_status: bool = False
    status: Frame | None = None
    status_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    async def wait_status(self, timeout: float = 10.0) -> Frame:
        """Return the diverted `notification_status` frame once it arrived."""
        async with asyncio.timeout(timeout):
            await self.status_seen.wait()
        assert self.status is not None
        return self.status

    async def next_event(self, timeout: float = 10.0) -> Frame:
        """Return the next event frame, failing after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            return await self.frames.get()

    async def read_lines(self) -> None:
        """Parse the body into frames until the response ends."""
        buffer = ""
        current = Frame()
        data_lines: list[str] = []
        try:
            async for chunk in self.response.aiter_text():
                buffer += chunk
                while True:
                    line, sep, rest = _split_line(buffer)
                    if not sep:
                        break
                    buffer = rest
                    if self.first_line is None:
                        self.first_line = line
                    if line == "":
                        if data_lines or current.event != "message":
                            current.data = "\n".join(data_lines)
                            self._dispatch(current)
                        current, data_lines = Frame(id=current.id), []
                        continue
                    name, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if name == "":
                        self.comments.append(value)
                    elif name == "data":
                        data_lines.append(value)
                    elif name == "event":
                        current.event = value
                    elif name == "id":
                        current.id = value
                    elif name == "retry" and value.isdigit():
                        self.retries.append(int(value))
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass
        finally:
            self.closed.set()

    def _dispatch(self, frame: Frame) -> None:
        diverted = self.divert_status and self.status is None
        if diverted and frame.event == "notification_status":
            self.status = frame
            self.status_seen.set()
        else:
            self.frames.put_nowait(frame)


def _split_line(buffer: str) -> tuple[str, str, str]:
    for index, char in enumerate(buffer):
        if char == "\n":
            return buffer[:index], "\n", buffer[index + 1 :]
        if char == "\r":
            if index + 1 == len(buffer):
                return "", "", buffer  # wait: CR may be followed by LF
            end = index + 2 if buffer[index + 1] == "\n" else index + 1
            return buffer[:index], buffer[index:end], buffer[end:]
    return "", "", buffer


@contextlib.asynccontextmanager
async def open_stream(
    url: str,
    headers: dict | None = None,
    params: dict | None = None,
    *,
    divert_status: bool = True,
):
    """Open an SSE stream and read it in the background; yields an `SseStream`.

    The first `notification_status` frame goes to `SseStream.status` unless
    `divert_status` is false.
    """
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client:
        request = client.build_request("GET", url, headers=headers, params=params)
        response = await client.send(request, stream=True)
        stream = SseStream(response, divert_status=divert_status)
        try:
            if response.status_code == 200:
                stream._task = asyncio.create_task(stream.read_lines())
            yield stream
        finally:
            if stream._task is not None:
                stream._task.cancel()
                await asyncio.gather(stream._task, return_exceptions=True)
            await response.aclose()
