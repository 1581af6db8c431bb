"""API service: the Litestar app and its process lifecycle."""

from __future__ import annotations

import asyncio

import asyncpg
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from tidings.api.auth import resolve_caller, resolve_optional_caller
from tidings.api.broadcasts import BROADCAST_ROUTES
from tidings.api.notifications import USER_ROUTES
from tidings.api.sending import send_notification
from tidings.shared.db import create_pool
from tidings.shared.http import (
    HttpServer,
    health_handlers,
    log_unhandled_exception,
    too_deeply_nested,
)
from tidings.shared.logs import get_logger
from tidings.shared.metrics import metrics
from tidings.shared.settings import Settings
from tidings.shared.telemetry import http_tracing_plugins

log = get_logger(__name__)


def build_app(settings: Settings, pool: asyncpg.Pool) -> Litestar:
    """Build the notification API app."""

    async def ready() -> bool:
        try:
            await pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError):
            return False
        return True

    cors = None
    if settings.cors_origin_list:
        cors = CORSConfig(allow_origins=settings.cors_origin_list)
    # Request counts and durations by route, in the shared registry that
    # `/metrics` serves. Litestar registers these metrics once per process.
    request_metrics = PrometheusConfig(
        app_name="tidings-api",
        prefix="tidings_api",
        group_path=True,
        exclude=["^/healthz$", "^/readyz$", "^/metrics$"],
    )
    # Broadcast routes come first: `/broadcast` is not a notification id.
    return Litestar(
        [
            *BROADCAST_ROUTES,
            send_notification,
            *USER_ROUTES,
            *health_handlers(ready),
            metrics,
        ],
        dependencies={
            "db_pool": Provide(lambda: pool, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "caller": Provide(resolve_caller),
            "optional_caller": Provide(resolve_optional_caller),
        },
        cors_config=cors,
        exception_handlers={RecursionError: too_deeply_nested},
        after_exception=[log_unhandled_exception],
        middleware=[request_metrics.middleware],
        plugins=http_tracing_plugins(),
        openapi_config=_openapi_config(),
        logging_config=None,
    )


def _openapi_config() -> OpenAPIConfig:
    api_key = SecurityScheme(
        type="apiKey",
        name="x-api-key",
        security_scheme_in="header",
        description="A user's Galaxy API key; admin routes need an admin's key",
    )
    return OpenAPIConfig(
        title="Tidings notification API",
        version="0.1.0",
        components=Components(security_schemes={"apiKey": api_key}),
        security=[{"apiKey": []}],
    )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API until `stop` is set."""
    pool = await create_pool(settings.database_url)
    server = HttpServer(build_app(settings, pool), settings.host, settings.api_port)
    await server.start()
    log.info("api started", port=settings.api_port)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await pool.close()
        log.info("api stopped")
