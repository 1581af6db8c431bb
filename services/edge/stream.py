"""The SSE endpoint `GET /api/events/stream`.

Opening a stream takes these steps. Check the origin, authenticate and count
the stream against the limits. Subscribe its audiences, and hold live
frames from here on. Write the response head and `retry:`. Then replay
after its `Last-Event-ID`, or send `reset` when that id cannot be honoured,
or send `notification_status` on a fresh connect. Held live frames follow,
minus those the replay already wrote. From then on the hub writes to the
stream directly and no task is left running for it.

A `reset` or `notification_status` frame carries the id of the stream's last
sequence when the stream was subscribed. Every event up to it is reflected
in the state the client fetches then, so a client that reconnects with that
id misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import nats.errors

from tidings.edge import metrics
from tidings.edge.auth import Authenticator, AuthError, Caller, Credentials
from tidings.edge.catchup import ReplayError, ResetRequired, replay, resume_after
from tidings.edge.connection import SseConnection
from tidings.edge.cors import OriginPolicy
from tidings.edge.credentials import stream_credentials
from tidings.edge.hub import Hub, StreamState
from tidings.edge.keepalive import send_keepalives
from tidings.edge.limits import LimitExceeded, StreamLimits
from tidings.edge.protocol import StreamRequest, encode_response, json_response
from tidings.edge.sse import FramingError, format_event, format_retry
from tidings.edge.status import read_status
from tidings.shared.errors import TidingsError
from tidings.shared.events import Reset, encode
from tidings.shared.logs import get_logger
from tidings.shared.settings import Settings
from tidings.shared.subjects import EVENT_TYPE_HEADER, event_subject

log = get_logger(__name__)

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
    b"connection: close\r\n"
)
# Replays running at once; more wait, so a reconnect storm cannot flood NATS
# with consumers.
_CONCURRENT_REPLAYS = 32
# Replays after which a stream whose live events keep overflowing is ended.
_MAX_REPLAY_ROUNDS = 10


class _ClientGone(Exception):
    """The client went away while its stream was opening."""


class StreamEndpoint:
    """Opens SSE streams and keeps the set of open ones."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        auth: Authenticator,
        pool: asyncpg.Pool,
        limits: StreamLimits,
    ):
        self.settings = settings
        self.hub = hub
        self.auth = auth
        self.limits = limits
        self.accepting = True
        self._pool = pool
        self._origins = OriginPolicy(settings.cors_origin_list)
        self._opening: dict[SseConnection, asyncio.Task] = {}
        self._open: set[SseConnection] = set()
        # Kind of credential of each open stream, the label of its gauge.
        self._auth_kinds: dict[SseConnection, str] = {}
        self._replays = asyncio.Semaphore(_CONCURRENT_REPLAYS)
        self._keepalive: asyncio.Task | None = None

    @property
    def stream_count(self) -> int:
        """Number of streams registered with the hub right now."""
        return len(self._open)

    def streams(self) -> set[SseConnection]:
        """Return every stream that has not gone away, opening or open."""
        return set(self._open) | set(self._opening)

    def start(self) -> None:
        """Start sending keepalives."""
        self._keepalive = asyncio.create_task(
            send_keepalives(self._open, self.settings.keepalive_seconds)
        )

    async def close(self) -> None:
        """Stop keepalives and wait for opening streams to settle."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        for connection in list(self._opening):
            connection.cut("shutdown")
        await asyncio.gather(*self._opening.values(), return_exceptions=True)

    # opening

    def handle(self, transport: asyncio.Transport, request: StreamRequest) -> None:
        """Respond to a stream request whose head was just read."""
        rejection = self._rejection(request)
        if rejection is not None:
            transport.write(rejection)
            transport.close()
            return
        connection = SseConnection(transport, (), self.settings.queue_size, self)
        transport.set_protocol(connection)
        self._opening[connection] = asyncio.create_task(
            self._open_stream(connection, request)
        )

    def _rejection(self, request: StreamRequest) -> bytes | None:
        if not self._origins.allows(request):
            return json_response(
                403,
                {
                    "detail": f"origin {request.header('origin')!r} may not read "
                    "this stream; add it to TIDINGS_CORS_ORIGINS",
                    "reason": "origin_not_allowed",
                },
            )
        if request.method == "OPTIONS":
            return encode_response(204, b"", self._origins.preflight_headers(request))
        if request.method != "GET":
            return json_response(
                405,
                {"detail": f"method {request.method} not allowed; use GET"},
                [("allow", "GET, OPTIONS")],
            )
        if not self.accepting:
            return json_response(
                503,
                {"detail": "edge is shutting down; retry", "reason": "draining"},
                [("retry-after", "1")],
            )
        return None

    async def _open_stream(
        self, connection: SseConnection, request: StreamRequest
    ) -> None:
        caller: Caller | None = None
        try:
            credentials = stream_credentials(request)
            caller = await self.auth.authenticate(credentials)
            self._check_gone(connection)
            self.limits.acquire(caller.audience)
            connection.audiences = caller.audiences
            self._open.add(connection)
            auth_kind = _auth_kind(credentials)
            self._auth_kinds[connection] = auth_kind
            metrics.CONNECTIONS.labels(auth_kind).inc()
            connection.hold_live()
            state = await self.hub.attach(connection)
            self._check_gone(connection)
            head = _STREAM_HEAD
            for name, value in self._origins.response_headers(request):
                head += f"{name}: {value}\r\n".encode("latin-1")
            connection.write(head + b"\r\n" + format_retry(self.settings.retry_ms))
            last_event_id, source = _last_event_id(request)
            start = await self._start_from(connection, caller, state, last_event_id)
            log.info(
                "stream opened",
                audience=caller.audience,
                start=start,
                last_event_id_from=source,
            )
        except AuthError as exc:
            self._reject(connection, 401, str(exc), exc.reason, request)
        except LimitExceeded as exc:
            self._reject(connection, 429, str(exc), exc.reason, request)
        except _ClientGone:
            pass
        except (
            TidingsError,
            nats.errors.Error,
            asyncpg.PostgresError,
            OSError,
            TimeoutError,
        ) as exc:
            log.error("stream could not be opened", error=str(exc))
            if connection in self._open:
                connection.end()
            else:
                self._reject(connection, 503, "edge unavailable; retry", "unavailable")
        finally:
            del self._opening[connection]
            if connection.closed:
                self._forget(connection)

    async def _start_from(
        self,
        connection: SseConnection,
        caller: Caller,
        state: StreamState,
        last_event_id: str,
    ) -> str:
        """Write what precedes live events; return how the stream started.

        That is `resume` (replayed after the id), `reset` or `fresh`.
        """
        through = state.last_sequence
        current_id = f"{state.epoch}.{through}"
        if last_event_id:
            try:
                after = resume_after(
                    last_event_id,
                    state.epoch,
                    state.first_sequence,
                    state.last_sequence,
                )
            except ResetRequired as exc:
                metrics.RESETS.labels(exc.reason).inc()
                log.info("stream reset", audience=caller.audience, reason=exc.reason)
                reset = encode(Reset(reason=exc.reason, message=str(exc)))
                connection.write(format_event("reset", reset, current_id))
            else:
                through = await self._replay(connection, after)
                connection.release_live(through)
                metrics.CATCHUPS.inc()
                return "resume"
        status = await read_status(self._pool, caller.user_id)
        self._check_gone(connection)
        frame = format_event("notification_status", encode(status), current_id)
        connection.write(frame)
        connection.release_live(through)
        return "reset" if last_event_id else "fresh"

    async def _replay(self, connection: SseConnection, after: int) -> int:
        """Write the stored events of the stream's audiences after `after`.

        Live frames that did not fit the held bound are replayed too, in
        further rounds. Returns the last sequence replayed, or `after`.
        """
        through = after
        for _ in range(_MAX_REPLAY_ROUNDS):
            through = await self._replay_round(connection, through)
            if connection.overflow_through <= through:
                return through
        raise ReplayError(
            f"live events outran {_MAX_REPLAY_ROUNDS} replay rounds; "
            "the client reconnects and resumes"
        )

    async def _replay_round(self, connection: SseConnection, after: int) -> int:
        subjects = [event_subject(a) for a in connection.audiences]
        through = after
        async with self._replays:
            missed = replay(self.hub.jetstream, subjects, after)
            async with contextlib.aclosing(missed) as msgs:
                async for msg in msgs:
                    self._check_gone(connection)
                    if connection.queued is not None:
                        await connection.writable()
                    through = msg.metadata.sequence.stream
                    event_type = (msg.headers or {}).get(EVENT_TYPE_HEADER)
                    try:
                        frame = self.hub.frame(event_type, msg.data, through)
                    except FramingError as exc:
                        log.error("event dropped", sequence=through, error=str(exc))
                        continue
                    connection.events += 1
                    connection.write(frame)
                    metrics.EVENTS_DELIVERED.inc()
        return through

    def _check_gone(self, connection: SseConnection) -> None:
        if connection.closed:
            raise _ClientGone

    def _reject(
        self,
        connection: SseConnection,
        status: int,
        detail: str,
        reason: str,
        request: StreamRequest | None = None,
    ) -> None:
        if connection.closed:
            return
        headers = self._origins.response_headers(request) if request else []
        if status == 429:
            headers.append(("retry-after", str(max(1, self.settings.retry_ms // 1000))))
        body = {"detail": detail, "reason": reason}
        connection.write(json_response(status, body, headers))
        connection.end()

    # closing

    def release(self, connection: SseConnection) -> None:
        """Forget a stream whose socket went away (called by the connection)."""
        if connection in self._opening:
            return  # The opening task drops it once it sees the stream closed.
        self._forget(connection)

    def _forget(self, connection: SseConnection) -> None:
        if connection not in self._open:
            return
        self._open.discard(connection)
        metrics.CONNECTIONS.labels(self._auth_kinds.pop(connection)).dec()
        if connection.cut_reason == "slow":
            metrics.SLOW_CLIENTS.inc()
        self.hub.detach(connection)
        self.limits.release(connection.audiences[0])
        log.info(
            "stream closed",
            audience=connection.audiences[0],
            seconds=round(time.monotonic() - connection.opened_at, 3),
            events=connection.events,
            cut=connection.cut_reason,
        )


def _auth_kind(credentials: Credentials) -> str:
    """Return the kind of credential a stream authenticated with, as it is chosen."""
    if credentials.token:
        return "token"
    if credentials.api_key:
        return "api_key"
    return "session_cookie"


def _last_event_id(request: StreamRequest) -> tuple[str, str | None]:
    """Return the last event id and where it came from (`header` or `query`).

    The header, which browsers send on reconnects, wins over the query
    parameter a page sets when it opens a new EventSource itself.
    """
    if value := request.header("last-event-id"):
        return value, "header"
    if value := request.param("lastEventId"):
        return value, "query"
    return "", None
