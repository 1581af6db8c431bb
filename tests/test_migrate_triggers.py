"""`tidings migrate --triggers-only` and `--remove-triggers` on an existing schema."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import Servers
from tidings.cli.triggers import trigger_functions
from tidings.shared.migrate import upgrade
from tidings.shared.triggers import install_statements

_TRIGGER_NAME = re.compile(r"CREATE TRIGGER (\w+)")
TRIGGERS = "SELECT count(*) FROM pg_trigger WHERE tgname = ANY($1::text[])"


def _trigger_names(statements: list[str]) -> list[str]:
    return [m.group(1) for s in statements if (m := _TRIGGER_NAME.search(s))]


def _galaxy_statements() -> list[str]:
    """The statements of the history audit triggers, which Galaxy has of its own."""
    return [s for s in install_statements() if "tidings" not in s]


ALL_TRIGGERS = _trigger_names(install_statements())


@pytest.fixture
async def tables_only(servers: Servers) -> AsyncIterator[str]:
    """URL of a fresh database with Galaxy's tables and no triggers."""
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute("DROP DATABASE IF EXISTS tidings_attach WITH (FORCE)")
    await admin.execute("CREATE DATABASE tidings_attach")
    url = servers.database_url.rsplit("/", 1)[0] + "/tidings_attach"
    # Alembic runs its own event loop, so it runs in a thread of its own.
    await asyncio.to_thread(upgrade, url, "0001")
    yield url
    await admin.execute("DROP DATABASE IF EXISTS tidings_attach WITH (FORCE)")
    await admin.close()


def _tidings(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = database_url
    env["TIDINGS_LOG_FORMAT"] = "json"
    return subprocess.run(
        [sys.executable, "-m", "tidings.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _audit_rows_after_writes(conn: asyncpg.Connection) -> tuple[int, int]:
    history = await conn.fetchval(
        "INSERT INTO history (name) VALUES ('h') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO history_dataset_association (history_id) VALUES ($1)", history
    )
    await conn.execute("INSERT INTO notification (category) VALUES ('message')")
    history_rows = await conn.fetchval(
        "SELECT count(*) FROM history_audit WHERE history_id = $1", history
    )
    change_rows = await conn.fetchval(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'tidings_change_audit'"
    )
    if change_rows:
        change_rows = await conn.fetchval(
            "SELECT count(*) FROM tidings_change_audit WHERE kind = 'notification'"
        )
    return history_rows, change_rows


async def test_triggers_only_install_twice_then_remove(tables_only: str):
    """Installing twice leaves one set of working triggers; removal drops them."""
    conn = await asyncpg.connect(tables_only)
    try:
        assert await conn.fetchval(TRIGGERS, ALL_TRIGGERS) == 0

        first = _tidings("migrate", "--triggers-only", database_url=tables_only)
        second = _tidings("migrate", "--triggers-only", database_url=tables_only)
        installed = await conn.fetchval(TRIGGERS, ALL_TRIGGERS)
        audited = await _audit_rows_after_writes(conn)

        removed = _tidings("migrate", "--remove-triggers", database_url=tables_only)
        remaining = await conn.fetchval(TRIGGERS, ALL_TRIGGERS)
        history_rows, change_rows = await _audit_rows_after_writes(conn)
        versions = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert len(ALL_TRIGGERS) >= 8  # INSERT and UPDATE of 3 history tables, notification
    assert installed == len(ALL_TRIGGERS)
    assert audited == (2, 1)
    assert removed.returncode == 0, removed.stderr
    assert remaining == 0
    assert (history_rows, change_rows) == (0, 1)  # only the earlier row is left
    assert versions == "0001"  # Alembic's own record is left alone


def test_trigger_functions_found():
    """The install's functions are read from the trigger SQL itself."""
    functions = trigger_functions()

    assert "fn_audit_history_by_history_id" in functions
    assert "fn_audit_history_by_id" in functions
    assert "tidings_record_change" in functions


async def test_remove_keeps_preexisting_history_triggers(tables_only: str):
    """Removal keeps history audit functions that existed before the install."""
    conn = await asyncpg.connect(tables_only)
    try:
        # Galaxy installs history audit functions of the same names itself.
        for statement in _galaxy_statements():
            await conn.execute(statement)
        galaxy_triggers = await conn.fetchval(TRIGGERS, ALL_TRIGGERS)

        installed = _tidings("migrate", "--triggers-only", database_url=tables_only)
        removed = _tidings("migrate", "--remove-triggers", database_url=tables_only)
        remaining = await conn.fetchval(TRIGGERS, ALL_TRIGGERS)
        history_rows, _ = await _audit_rows_after_writes(conn)
    finally:
        await conn.close()

    assert installed.returncode == 0, installed.stderr
    assert removed.returncode == 0, removed.stderr
    assert galaxy_triggers == 6  # INSERT and UPDATE of 3 history tables
    assert remaining == 6
    assert history_rows == 2


async def test_triggers_only_without_tables_fails_clearly(servers: Servers):
    """Installing onto a database without the tables fails with a clear message."""
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS tidings_empty WITH (FORCE)")
        await admin.execute("CREATE DATABASE tidings_empty")
        url = servers.database_url.rsplit("/", 1)[0] + "/tidings_empty"

        result = _tidings("migrate", "--triggers-only", database_url=url)

        await admin.execute("DROP DATABASE tidings_empty WITH (FORCE)")
    finally:
        await admin.close()

    assert result.returncode == 2
    assert "tidings: installing triggers failed:" in result.stderr
    assert "does not exist" in result.stderr
    assert "run `tidings migrate` to create them" in result.stderr
