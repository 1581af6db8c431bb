"""Serving an ASGI app with uvicorn inside a service's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from litestar import Litestar, MediaType, get
from litestar.exceptions import HTTPException
from litestar.response import Response

from tidings.shared.errors import ServiceError
from tidings.shared.logs import get_logger

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool] | bool]


class HttpServer:
    """A uvicorn server that runs as a task and stops on request."""

    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        grace_seconds: float = 5.0,
        http: type[asyncio.Protocol] | str = "auto",
        backlog: int = 2048,
        capture_signals: bool = True,
        headers: list[tuple[str, str]] | None = None,
    ):
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(grace_seconds)),
            http=http,
            backlog=backlog,
            headers=headers,
        )
        self._address = f"{host}:{port}"
        server_class = uvicorn.Server if capture_signals else _SignalFreeServer
        self.server = server_class(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start serving and return once the socket listens."""
        self._task = asyncio.create_task(self._serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise ServiceError(f"could not listen on {self._address}")
            await asyncio.sleep(0.01)

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit as exc:
            # uvicorn exits when it cannot bind; report it as an error instead.
            raise ServiceError(
                f"could not listen on {self._address}; is the port free?"
            ) from exc

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already open go on."""
        for server in self.server.servers:
            server.close()

    async def stop(self) -> None:
        """Stop accepting, let open requests finish, and wait for the task."""
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    @property
    def port(self) -> int:
        """Port the server listens on, useful when it was started on port 0."""
        return self.server.servers[0].sockets[0].getsockname()[1]


class _SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to the service.

    uvicorn's own handlers start its shutdown at once, before a service can
    drain what it serves.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_handlers(ready: ReadinessCheck) -> list:
    """Handlers of `/healthz` (process up) and `/readyz` (dependencies usable)."""

    @get("/healthz", media_type=MediaType.JSON)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON)
    async def readyz() -> Response[dict[str, str]]:
        result = ready()
        if not isinstance(result, bool):
            result = await result
        if result:
            return Response({"status": "ready"})
        return Response({"status": "not ready"}, status_code=503)

    return [healthz, readyz]


def operations_handlers(ready: ReadinessCheck) -> list:
    """Handlers of the health endpoints and of `/metrics`."""
    from tidings.shared.metrics import metrics

    return [*health_handlers(ready), metrics]


def health_app(ready: ReadinessCheck) -> Litestar:
    """Build the app of health and metrics endpoints of the bridge and enricher."""
    return Litestar(
        operations_handlers(ready), openapi_config=None, logging_config=None
    )


async def log_unhandled_exception(exc: Exception, scope) -> None:
    """Log an error that a route did not turn into an HTTP response (a 500)."""
    if isinstance(exc, HTTPException):
        return
    log.error(
        "request failed",
        method=scope.get("method"),
        path=scope.get("path"),
        error=repr(exc),
        exc_info=exc,
    )


def too_deeply_nested(_request, exc: RecursionError) -> Response[dict]:
    """Return a 400 for a JSON body nested beyond the parser's recursion limit."""
    detail = "JSON body is nested too deeply"
    return Response({"status_code": 400, "detail": detail}, status_code=400)
