"""Cross-origin rules of the stream: the page's origin must be allowed.

A request with no `Origin`, or from the edge's own origin, is same-origin.
Another origin must be listed in `TIDINGS_CORS_ORIGINS` (`*` allows any);
its responses then carry the headers that let the page read them, with
credentials, so `EventSource(url, {withCredentials: true})` can send the
Galaxy session cookie.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.edge.protocol import StreamRequest

_PREFLIGHT_HEADERS = "authorization, last-event-id, x-api-key, cache-control"
_PREFLIGHT_MAX_AGE_SECONDS = "600"


class OriginPolicy:
    """Decides whether a stream request's origin may read the stream."""

    def __init__(self, allowed: list[str]):
        self._any = "*" in allowed
        self._allowed = frozenset(o.rstrip("/") for o in allowed if o != "*")

    def allows(self, request: StreamRequest) -> bool:
        """Return True for a request from its own origin or an allowed one."""
        origin = request.header("origin")
        if not origin or _same_origin(origin, request.header("host")):
            return True
        return self._any or origin.rstrip("/") in self._allowed

    def response_headers(self, request: StreamRequest) -> list[tuple[str, str]]:
        """CORS headers for the response to an allowed cross-origin request."""
        origin = request.header("origin")
        if not origin or _same_origin(origin, request.header("host")):
            return []
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "origin"),
        ]

    def preflight_headers(self, request: StreamRequest) -> list[tuple[str, str]]:
        """Headers of the response to an allowed `OPTIONS` preflight."""
        return [
            *self.response_headers(request),
            ("access-control-allow-methods", "GET"),
            ("access-control-allow-headers", _PREFLIGHT_HEADERS),
            ("access-control-max-age", _PREFLIGHT_MAX_AGE_SECONDS),
        ]


def _same_origin(origin: str, host: str) -> bool:
    try:
        return bool(host) and urlsplit(origin).netloc == host
    except ValueError:
        return False
