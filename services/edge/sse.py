"""Server-Sent Events framing (WHATWG HTML, "Server-sent events").

A frame is a block of `field: value` lines ended by a blank line. Ids and
event names must be ASCII with no CR or LF; `data` may hold anything, so each
line of it becomes its own `data:` line and the browser joins them with LF.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"[\x21-\x7e]{1,128}")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

KEEPALIVE = b": keepalive\n\n"


class FramingError(ValueError):
    """An id or event name that cannot be written into an SSE frame."""


def _token(value: str, what: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    if not _TOKEN.fullmatch(raw):
        raise FramingError(f"SSE {what} {value!r} is not 1-128 printable ASCII bytes")
    return raw


def format_event(event_type: str, data: bytes, event_id: str | None = None) -> bytes:
    """Encode one event frame; `data` is written exactly, line breaks included."""
    parts = []
    if event_id is not None:
        parts.append(b"id: " + _token(event_id, "id") + b"\n")
    parts.append(b"event: " + _token(event_type, "event name") + b"\n")
    for line in _LINE_BREAK.split(data):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def format_retry(milliseconds: int) -> bytes:
    """Encode the frame that sets the browser's reconnection delay."""
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"
