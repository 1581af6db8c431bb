"""`POST /api/events/token`: a stream token for a caller who is signed in.

A page that cannot send its credentials on the stream request itself (a
cross-origin page without the cookie, or one holding an API key) fetches a
token here and opens `EventSource(".../api/events/stream?token=...")`. The
caller proves who it is with an API key or the Galaxy session cookie. A
token cannot be traded for a new one, so a leaked token dies at its expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from litestar import MediaType, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Response

from tidings.edge.auth import Authenticator, AuthError, Credentials
from tidings.edge.galaxy_cookie import COOKIE_NAME


@post("/api/events/token", media_type=MediaType.JSON, status_code=200)
async def mint_stream_token(
    request: Request, authenticator: NamedDependency[Authenticator]
) -> Response[dict]:
    """Return a stream token for the caller, with its expiry."""
    signer = authenticator.signer
    if not signer.enabled:
        return Response(
            {
                "detail": "stream tokens are disabled on this edge: "
                "set TIDINGS_TOKEN_SECRET",
                "reason": "token_disabled",
            },
            status_code=503,
        )
    credentials = Credentials(
        api_key=request.headers.get("x-api-key") or request.query_params.get("key", ""),
        session_cookie=request.cookies.get(COOKIE_NAME, ""),
    )
    try:
        caller = await authenticator.authenticate(credentials, allow_token=False)
    except AuthError as exc:
        return Response({"detail": str(exc), "reason": exc.reason}, status_code=401)
    token = signer.mint(caller.audience, caller.user_id)
    expires_at = datetime.now(UTC) + timedelta(seconds=signer.ttl_seconds)
    return Response(
        {
            "token": token,
            "expires_in": int(signer.ttl_seconds),
            "expires_at": expires_at.isoformat(),
        }
    )


@get("/api/events/stream", media_type=MediaType.JSON)
async def stream_on_reused_connection() -> Response[dict]:
    """Return 421 for a stream request that followed another on one connection.

    Streams are served only as the first request of a connection (every
    other response of the edge closes its connection). A 421 makes the client
    retry on a new connection.
    """
    return Response(
        {
            "detail": "open the event stream on a new connection",
            "reason": "misdirected",
        },
        status_code=421,
    )
