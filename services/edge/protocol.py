"""The edge's HTTP/1.1 protocol: SSE stream requests here, the rest to uvicorn.

uvicorn runs an ASGI request as a task with a scope, a receive queue and
flow-control events, about 10 KiB per open response. An idle SSE stream
needs none of that, so this protocol reads the request line first. A request
for the stream path is parsed here (with httptools, as uvicorn does) and
handed to the stream endpoint, which keeps only the transport and a small
object per stream. Any other request is handed, bytes and all, to uvicorn's
own protocol, which serves the Litestar app as usual.

uvicorn takes this class through its `http` setting and builds one per
connection with `(config, server_state, app_state, _loop)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import parse_qs

import httptools
import msgspec
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

STREAM_PATH = b"/api/events/stream"
MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEAD_BYTES = 16 * 1024
_MAX_PARAMS = 32

_UVICORN_PROTOCOL: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["auto"])


class StreamRequest(msgspec.Struct):
    """The parts of a stream request the endpoint uses."""

    method: str
    http_version: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def header(self, name: str) -> str:
        """Value of a header by its lower-case name, or an empty string."""
        return self.headers.get(name, "")

    def param(self, name: str) -> str:
        """First value of a query parameter, or an empty string."""
        values = self.query.get(name)
        return values[0] if values else ""


StreamHandler = Callable[[asyncio.Transport, StreamRequest], None]


def encode_response(
    status: int, body: bytes, headers: list[tuple[str, str]] | None = None
) -> bytes:
    """Encode a complete response that closes the connection."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if status != 204:
        lines.append(f"content-length: {len(body)}")
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_response(
    status: int, body: dict, headers: list[tuple[str, str]] | None = None
) -> bytes:
    """Encode a JSON response that closes the connection."""
    all_headers = [("content-type", "application/json"), *(headers or [])]
    return encode_response(status, msgspec.json.encode(body), all_headers)


def protocol_class(handle_stream: StreamHandler) -> type[asyncio.Protocol]:
    """Return the protocol class to give uvicorn as its `http` setting."""

    class EdgeHttpProtocol(_EdgeHttpProtocol):
        _handle_stream = staticmethod(handle_stream)

    return EdgeHttpProtocol


class _HeadCollector:
    """httptools callbacks that keep the URL and headers of one request."""

    def __init__(self):
        self.url = b""
        self.headers: dict[str, str] = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self.headers:
            separator = "; " if key == "cookie" else ", "
            text = self.headers[key] + separator + text
        self.headers[key] = text


class _EdgeHttpProtocol(asyncio.Protocol):
    _handle_stream: StreamHandler

    def __init__(self, config, server_state, app_state, _loop=None):
        self._uvicorn_args = (config, server_state, app_state, _loop)
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._is_stream: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._is_stream is False or self._transport is None:
            return
        self._head += data
        if self._is_stream is None:
            self._is_stream = self._route()
            if self._is_stream is None:
                return
            if not self._is_stream:
                self._hand_to_uvicorn()
                return
        self._read_stream_head()

    def _route(self) -> bool | None:
        """True for a request of the stream path; None until that is known."""
        end = self._head.find(b"\n")
        if end < 0:
            return False if len(self._head) > MAX_REQUEST_LINE_BYTES else None
        parts = bytes(self._head[:end]).split(b" ")
        if len(parts) != 3:
            return False
        path = parts[1].split(b"?", 1)[0]
        return path == STREAM_PATH

    def _hand_to_uvicorn(self) -> None:
        config, server_state, app_state, loop = self._uvicorn_args
        inner = _UVICORN_PROTOCOL(  # type: ignore[call-arg]
            config=config, server_state=server_state, app_state=app_state, _loop=loop
        )
        transport = self._transport
        assert transport is not None
        head, self._head = bytes(self._head), bytearray()
        transport.set_protocol(inner)
        inner.connection_made(transport)
        inner.data_received(head)

    def _read_stream_head(self) -> None:
        transport = self._transport
        assert transport is not None
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:
                self._reject(431, "request head is larger than 16 KiB")
            return
        if end + 4 > MAX_HEAD_BYTES:
            self._reject(431, "request head is larger than 16 KiB")
            return
        collector = _HeadCollector()
        parser = httptools.HttpRequestParser(collector)
        try:
            parser.feed_data(bytes(self._head[: end + 4]))
            query = httptools.parse_url(collector.url).query or b""
            params = parse_qs(query.decode("latin-1"), max_num_fields=_MAX_PARAMS)
        except httptools.HttpParserUpgrade:
            self._reject(400, "the event stream cannot be upgraded")
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
            return
        except ValueError:
            self._reject(400, f"more than {_MAX_PARAMS} query parameters")
            return
        self._head = bytearray()
        self._is_stream = False  # Bytes after the head are not read.
        request = StreamRequest(
            method=parser.get_method().decode("ascii", "replace"),
            http_version=parser.get_http_version(),
            query=params,
            headers=collector.headers,
        )
        self._handle_stream(transport, request)

    def _reject(self, status: int, detail: str) -> None:
        assert self._transport is not None
        self._is_stream = False
        self._transport.write(json_response(status, {"detail": detail}))
        self._transport.close()
