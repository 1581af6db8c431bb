"""Reading the credentials of a stream request from its query and headers."""

from __future__ import annotations

from tidings.edge.auth import Credentials
from tidings.edge.galaxy_cookie import COOKIE_NAME
from tidings.edge.protocol import StreamRequest


def stream_credentials(request: StreamRequest) -> Credentials:
    """Collect the token, API key and session cookie a stream request carries."""
    token = request.param("token")
    authorization = request.header("authorization")
    if not token and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    return Credentials(
        token=token,
        api_key=request.header("x-api-key") or request.param("key"),
        session_cookie=_cookie(request.header("cookie"), COOKIE_NAME),
    )


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return ""
