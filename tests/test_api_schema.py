"""Schemathesis drives every operation of the API's schema: no request gets a 5xx.

The API runs as its own process (`python -m tidings.cli.main api`), because
Schemathesis sends its requests synchronously from the test's thread. The
schema is the one the app serves at `/schema`, built without a database at
import time, so that tests can be generated from it before the process
starts. Each operation gets a bounded number of generated examples, sent
with an admin's API key so that every route runs past authentication.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import ADMIN_EMAIL, Servers
from tidings.api.app import build_app
from tidings.cli.up import settings_env
from tidings.shared.embedded import free_port
from tidings.shared.settings import Settings

EXAMPLES_PER_OPERATION = 25
ADMIN_KEY = secrets.token_hex(16)


async def _add_admin(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        user_id = await conn.fetchval(
            "INSERT INTO galaxy_user (email) VALUES ($1)"
            " ON CONFLICT (email) DO UPDATE SET deleted = false RETURNING id",
            ADMIN_EMAIL,
        )
        await conn.execute(
            "INSERT INTO api_keys (user_id, key) VALUES ($1, $2)", user_id, ADMIN_KEY
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def api_url(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of an API process on the session's database, with an admin key."""
    asyncio.run(_add_admin(servers.database_url))
    port = free_port()
    settings = Settings(
        database_url=servers.database_url,
        nats_url=servers.nats_url,
        api_port=port,
        admin_users=ADMIN_EMAIL,
        log_level="WARNING",
    )
    log_path: Path = tmp_path_factory.mktemp("api") / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidings.cli.main", "api"],
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_ready(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"API did not become ready: {log_path.read_text()[-2000:]}")


def _openapi_document() -> dict:
    # Building the schema reads the routes only; no request reaches the pool.
    app = build_app(Settings(), pool=None)
    return app.openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(_openapi_document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, api_url: str):
    """A generated request never gets a 5xx."""
    case.call_and_validate(
        base_url=api_url, headers={"x-api-key": ADMIN_KEY}, checks=[not_a_server_error]
    )
