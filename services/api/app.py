"""API service: the Litestar app and its process lifecycle."""

from __future__ import annotations

import asyncio

import asyncpg
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from tidings.api.notifications import create_notification
from tidings.shared.db import create_pool
from tidings.shared.http import HttpServer, health_handlers
from tidings.shared.logs import get_logger
from tidings.shared.settings import Settings

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
    return Litestar(
        [create_notification, *health_handlers(ready)],
        dependencies={
            "db_pool": Provide(lambda: pool, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
        },
        cors_config=cors,
        openapi_config=OpenAPIConfig(title="Tidings notification API", version="0.1.0"),
        logging_config=None,
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
