"""Edge service: the Litestar app and its process lifecycle."""

from __future__ import annotations

import asyncio

import asyncpg
from litestar import Litestar, asgi
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.static_files import create_static_files_router
from litestar.types import Receive, Scope, Send
from nats.aio.client import Client

from tidings.edge.auth import ApiKeyAuthenticator
from tidings.edge.demo import DEMO_HANDLERS, STATIC_DIR
from tidings.edge.hub import Hub
from tidings.edge.stream import StreamEndpoint
from tidings.shared.db import create_pool
from tidings.shared.http import HttpServer, health_handlers
from tidings.shared.logs import get_logger
from tidings.shared.nats import connect_nats, ensure_streams, stream_epoch
from tidings.shared.settings import Settings
from tidings.shared.subjects import EVENTS_STREAM

log = get_logger(__name__)


class Edge:
    """One edge process: a NATS client, a hub, an HTTP server."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.nc: Client | None = None
        self.pool: asyncpg.Pool | None = None
        self.hub: Hub | None = None
        self.endpoint: StreamEndpoint | None = None
        self._http: HttpServer | None = None

    async def start(self) -> None:
        """Connect, learn the stream epoch and start serving."""
        self.pool = await create_pool(self.settings.database_url)
        self.nc = await connect_nats(self.settings, "edge")
        js = self.nc.jetstream()
        await ensure_streams(js, self.settings)
        epoch = stream_epoch(await js.stream_info(EVENTS_STREAM))
        self.hub = Hub(self.nc, epoch)
        auth = ApiKeyAuthenticator(self.pool, self.settings.api_key_cache_seconds)
        self.endpoint = StreamEndpoint(self.settings, self.hub, auth)
        app = self.build_app()
        self._http = HttpServer(app, self.settings.host, self.settings.edge_port)
        await self._http.start()
        log.info("edge started", port=self.settings.edge_port, epoch=epoch)

    async def stop(self) -> None:
        """Stop accepting, end every open stream, then close connections."""
        if self.endpoint is not None:
            self.endpoint.accepting = False
        if self.hub is not None:
            self.hub.close_all()
        if self._http is not None:
            await self._http.stop()
        if self.nc is not None:
            await self.nc.drain()
        if self.pool is not None:
            await self.pool.close()
        log.info("edge stopped")

    def is_ready(self) -> bool:
        """Return whether NATS is connected."""
        return self.nc is not None and self.nc.is_connected

    def build_app(self) -> Litestar:
        """Build the Litestar app of this edge."""
        endpoint = self.endpoint
        assert endpoint is not None

        @asgi("/api/events/stream", is_mount=False, copy_scope=False)
        async def events_stream(scope: Scope, receive: Receive, send: Send) -> None:
            await endpoint(scope, receive, send)

        handlers: list = [events_stream, *health_handlers(self.is_ready)]
        handlers.append(
            create_static_files_router(path="/static", directories=[STATIC_DIR])
        )
        if self.settings.demo:
            handlers += DEMO_HANDLERS
        cors = None
        if self.settings.cors_origin_list:
            cors = CORSConfig(allow_origins=self.settings.cors_origin_list)
        pool = self.pool
        return Litestar(
            handlers,
            dependencies={"db_pool": Provide(lambda: pool, sync_to_thread=False)},
            cors_config=cors,
            openapi_config=None,
            logging_config=None,
        )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one edge until `stop` is set."""
    edge = Edge(settings)
    await edge.start()
    try:
        await stop.wait()
    finally:
        await edge.stop()
