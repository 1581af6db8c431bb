"""Edge service: its parts, its Litestar app and its process lifecycle.

Stream requests are served by the edge's own protocol (see `protocol.py`);
every other route (health, stream tokens, static files, the demo) is a
Litestar app behind uvicorn on the same port.
"""

from __future__ import annotations

import asyncio

import asyncpg
import nats.errors
from litestar import Litestar, MediaType, get
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.static_files import create_static_files_router
from nats.aio.client import Client

from tidings.edge.auth import Authenticator
from tidings.edge.demo import DEMO_HANDLERS, STATIC_DIR
from tidings.edge.drain import drain_streams
from tidings.edge.galaxy_cookie import SessionCookieDecoder
from tidings.edge.hub import Hub
from tidings.edge.limits import StreamLimits
from tidings.edge.protocol import protocol_class
from tidings.edge.routes import mint_stream_token, stream_on_reused_connection
from tidings.edge.stream import StreamEndpoint
from tidings.edge.tokens import TokenSigner
from tidings.shared.db import create_pool
from tidings.shared.http import (
    HttpServer,
    health_handlers,
    log_unhandled_exception,
)
from tidings.shared.logs import get_logger
from tidings.shared.metrics import metrics
from tidings.shared.nats import connect_nats, ensure_streams
from tidings.shared.settings import Settings
from tidings.shared.telemetry import http_tracing_plugins

log = get_logger(__name__)

# Pending connections the kernel queues for the edge (capped by somaxconn),
# so a reconnect storm is not refused while streams are being opened.
_LISTEN_BACKLOG = 4096


class Edge:
    """One edge process: a NATS client, a hub, the stream endpoint, an HTTP server."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.nc: Client | None = None
        self.pool: asyncpg.Pool | None = None
        self.hub: Hub | None = None
        self.endpoint: StreamEndpoint | None = None
        self.draining = False
        self._http: HttpServer | None = None

    async def start(self) -> None:
        """Connect, learn the stream epoch and start serving."""
        settings = self.settings
        signer = TokenSigner(settings.token_secret, settings.token_ttl_seconds)
        cookies = SessionCookieDecoder(settings.id_secret)
        self.pool = await create_pool(settings.database_url)
        self.nc = await connect_nats(
            settings,
            "edge",
            disconnected=self._on_nats_disconnected,
            reconnected=self._on_nats_reconnected,
        )
        await ensure_streams(self.nc.jetstream(), settings)
        self.hub = Hub(self.nc, await Hub.read_state(self.nc.jetstream()))
        auth = Authenticator(
            self.pool,
            signer,
            cookies,
            api_key_ttl=settings.api_key_cache_seconds,
            session_ttl=settings.session_cache_seconds,
        )
        limits = StreamLimits(settings.max_streams, settings.max_streams_per_user)
        self.endpoint = StreamEndpoint(settings, self.hub, auth, self.pool, limits)
        self._http = HttpServer(
            self.build_app(auth),
            settings.host,
            settings.edge_port,
            http=protocol_class(self.endpoint.handle),
            backlog=_LISTEN_BACKLOG,
            capture_signals=False,
            # The edge's protocol routes a connection by its first request;
            # one that uvicorn served must not carry a stream request later.
            headers=[("connection", "close")],
        )
        await self._http.start()
        self.endpoint.start()
        log.info("edge started", port=settings.edge_port, epoch=self.hub.epoch)

    async def stop(self) -> None:
        """Stop accepting, end open streams over the drain window, then close."""
        self.draining = True
        if self.endpoint is not None:
            self.endpoint.accepting = False
        if self._http is not None:
            self._http.stop_accepting()
        if self.endpoint is not None:
            await drain_streams(self.endpoint.streams, self.settings.drain_seconds)
            await self.endpoint.close()
        if self._http is not None:
            await self._http.stop()
        if self.hub is not None:
            await self.hub.close()
        if self.nc is not None:
            try:
                await self.nc.drain()
            except nats.errors.Error as exc:
                log.warning("nats not drained", error=str(exc))
                await self.nc.close()
        if self.pool is not None:
            await self.pool.close()
        log.info("edge stopped")

    def is_ready(self) -> bool:
        """Return whether NATS is up, live delivery is whole and no drain runs."""
        if self.draining or self.nc is None or not self.nc.is_connected:
            return False
        return self.hub is not None and not self.hub.recovering

    async def _on_nats_disconnected(self) -> None:
        if self.hub is not None:
            await self.hub.on_disconnected()

    async def _on_nats_reconnected(self) -> None:
        if self.hub is not None:
            await self.hub.on_reconnected()

    def build_app(self, auth: Authenticator) -> Litestar:
        """Build the Litestar app serving every route but the stream."""
        handlers: list = [
            mint_stream_token,
            stream_on_reused_connection,
            self._stats_handler(),
            *health_handlers(self.is_ready),
            metrics,
            create_static_files_router(path="/static", directories=[STATIC_DIR]),
        ]
        if self.settings.demo:
            handlers += DEMO_HANDLERS
        cors = None
        if self.settings.cors_origin_list:
            cors = CORSConfig(
                allow_origins=self.settings.cors_origin_list, allow_credentials=True
            )
        pool, settings = self.pool, self.settings
        return Litestar(
            handlers,
            dependencies={
                "db_pool": Provide(lambda: pool, sync_to_thread=False),
                "authenticator": Provide(lambda: auth, sync_to_thread=False),
                "settings": Provide(lambda: settings, sync_to_thread=False),
            },
            cors_config=cors,
            after_exception=[log_unhandled_exception],
            plugins=http_tracing_plugins(),
            openapi_config=None,
            logging_config=None,
        )

    def _stats_handler(self):
        edge = self

        @get("/api/events/stats", media_type=MediaType.JSON)
        async def stream_stats() -> dict[str, int]:
            """Open streams and audience subscriptions of this edge process."""
            hub, endpoint = edge.hub, edge.endpoint
            return {
                "streams": endpoint.stream_count if endpoint else 0,
                "subscriptions": hub.subscription_count if hub else 0,
            }

        return stream_stats


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run one edge until `stop` is set."""
    edge = Edge(settings)
    await edge.start()
    try:
        await stop.wait()
    finally:
        await edge.stop()
