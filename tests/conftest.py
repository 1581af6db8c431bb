"""Fixtures: embedded Postgres and NATS for the session, a fresh pipeline per test."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js.errors import NotFoundError

from tidings.api.app import build_app
from tidings.bridge.service import Bridge
from tidings.edge.app import Edge
from tidings.enricher.service import Enricher
from tidings.shared.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from tidings.shared.http import HttpServer
from tidings.shared.migrate import upgrade
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    CHANGES_STREAM,
    EVENTS_STREAM,
    event_subject,
    user_audience,
)

ADMIN_EMAIL = "admin@example.org"

# Every table the migrations create; Alembic's own bookkeeping stays.
_TABLES = """
SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables
WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""


@dataclass
class Servers:
    """URLs of the servers every test talks to."""

    database_url: str
    nats_url: str
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """Embedded Postgres and NATS for the whole session, migrated once.

    `TIDINGS_TEST_DATABASE_URL` and `TIDINGS_TEST_NATS_URL` point the suite at
    servers that are already running instead; the database must be empty.
    """
    root: Path = tmp_path_factory.mktemp("servers")
    database_url = os.environ.get("TIDINGS_TEST_DATABASE_URL", "")
    nats_url = os.environ.get("TIDINGS_TEST_NATS_URL", "")
    postgres = nats_server = None
    if not database_url:
        postgres = EmbeddedPostgres(root / "postgres", fast=True)
        postgres.start()
        database_url = postgres.url
    if not nats_url:
        nats_server = EmbeddedNats(root / "nats")
        nats_server.start()
        nats_url = nats_server.url
    upgrade(database_url)
    yield Servers(database_url, nats_url, postgres, nats_server)
    if nats_server is not None:
        nats_server.stop()
    if postgres is not None:
        postgres.stop()


@pytest.fixture
def settings(servers: Servers) -> Settings:
    """Settings of one test's services, on free ports."""
    return Settings(
        database_url=servers.database_url,
        nats_url=servers.nats_url,
        edge_port=free_port(),
        api_port=free_port(),
        bridge_port=free_port(),
        enricher_port=free_port(),
        admin_users=ADMIN_EMAIL,
        keepalive_seconds=0.5,
        # Coalescing delays a repeated change of a key for the window, which
        # would let `Pipeline.settle()` return before it; the bridge's own
        # tests turn it on where they check it.
        bridge_coalesce_ms=0,
        retry_ms=1500,
        demo=True,
    )


@pytest.fixture
async def db(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    """A pool on an emptied database; streams are deleted too, so tests start clean."""
    pool = await asyncpg.create_pool(servers.database_url, min_size=1, max_size=4)
    await pool.execute(f"TRUNCATE {await pool.fetchval(_TABLES)} CASCADE")
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    for stream in (CHANGES_STREAM, EVENTS_STREAM):
        try:
            await js.delete_stream(stream)
        except NotFoundError:
            pass
    await nc.close()
    yield pool
    await pool.close()


@dataclass
class Pipeline:
    """The four services of one test, running in the test's event loop."""

    settings: Settings
    db: asyncpg.Pool

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_port}/api/events/stream"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}/api"

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_port}"

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every change committed so far has become an event.

        Commits a change to a history of a dedicated user and waits for its
        event in `TIDINGS_EVENTS`. The bridge and the enricher keep commit
        order, so every earlier change has been handled by then.
        """
        barrier = await self.db.fetchval(
            "SELECT id FROM galaxy_user WHERE email = 'barrier@example.org'"
        )
        if barrier is None:
            barrier = (await create_user(self.db, "barrier")).id
        history_id = await self.db.fetchval(
            "INSERT INTO history (user_id, name) VALUES ($1, 'barrier') RETURNING id",
            barrier,
        )
        nc = await nats.connect(self.settings.nats_url)
        try:
            js = nc.jetstream()
            subject = event_subject(user_audience(barrier))
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        msg = await js.get_last_msg(EVENTS_STREAM, subject)
                    except NotFoundError:
                        msg = None
                    if msg is not None and f'"{history_id}"'.encode() in msg.data:
                        return
                    await asyncio.sleep(0.02)
        finally:
            await nc.close()


@pytest.fixture
async def pipeline(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[Pipeline]:
    """Bridge, enricher, edge and API against the session's servers."""
    bridge, enricher, edge = Bridge(settings), Enricher(settings), Edge(settings)
    api_pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    api = HttpServer(build_app(settings, api_pool), "127.0.0.1", settings.api_port)
    started = []
    try:
        for service in (bridge, enricher, edge, api):
            await service.start()
            started.append(service)
        yield Pipeline(settings, db)
    finally:
        for service in reversed(started):
            await service.stop()
        await api_pool.close()


@dataclass
class User:
    """A user row with one API key."""

    id: int
    email: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}


async def create_user(db: asyncpg.Pool, name: str) -> User:
    """Insert a user with an API key."""
    email = f"{name}@example.org"
    user_id = await db.fetchval(
        "INSERT INTO galaxy_user (email, username) VALUES ($1, $2) RETURNING id",
        email,
        name,
    )
    key = secrets.token_hex(16)
    await db.execute(
        "INSERT INTO api_keys (user_id, key) VALUES ($1, $2)", user_id, key
    )
    return User(user_id, email, key)


async def create_history(db: asyncpg.Pool, user: User | None, name: str = "h") -> int:
    """Insert a history owned by `user`, or by no user when it is None."""
    return await db.fetchval(
        "INSERT INTO history (user_id, name) VALUES ($1, $2) RETURNING id",
        user.id if user else None,
        name,
    )


TOKEN_SECRET = "test-token-secret-0123456789"


@dataclass
class EdgeUnderTest:
    """An edge running in the test's event loop, and a NATS client to feed it."""

    edge: Edge
    nc: nats.aio.client.Client

    @property
    def settings(self) -> Settings:
        return self.edge.settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_port}"

    @property
    def stream_url(self) -> str:
        return f"{self.url}/api/events/stream"

    async def publish(self, audience: str, event_type: str, data: bytes) -> int:
        """Store an event in TIDINGS_EVENTS as the enricher does; return its seq."""
        ack = await self.nc.jetstream().publish(
            event_subject(audience), data, headers={"Tidings-Event": event_type}
        )
        return ack.seq

    def event_id(self, sequence: int) -> str:
        """The SSE id of the event stored at `sequence`."""
        assert self.edge.hub is not None
        return f"{self.edge.hub.epoch}.{sequence}"


@pytest.fixture
async def start_edge(settings: Settings, db: asyncpg.Pool):
    """Start edges alone (no bridge or enricher), with settings changed as asked.

    Tests publish events themselves, as the enricher would.
    """
    started: list[EdgeUnderTest] = []

    async def start(**changes: object) -> EdgeUnderTest:
        changes = {"token_secret": TOKEN_SECRET, "drain_seconds": 0.5, **changes}
        edge = Edge(settings.replace(**changes))
        await edge.start()
        nc = await nats.connect(
            edge.settings.nats_url, reconnect_time_wait=0.1, max_reconnect_attempts=-1
        )
        started.append(EdgeUnderTest(edge, nc))
        return started[-1]

    yield start
    for under_test in reversed(started):
        await under_test.nc.close()
        await under_test.edge.stop()


@pytest.fixture
async def edge(start_edge) -> EdgeUnderTest:
    """An edge alone with the test settings and a stream token secret."""
    return await start_edge()
