"""`tidings migrate --triggers-only` and `--remove-triggers`.

These attach Tidings to a database whose tables already exist, such as a
Galaxy database, without Alembic. The first installs the audit and notify
triggers and the `tidings_change_audit` table, and can run any number of
times. The second removes the triggers again.

Galaxy installs history audit functions of the same names itself. The
install marks each function it creates with a comment, and the removal drops
only marked functions, so Galaxy's own history triggers survive a removal.
The removal keeps `tidings_change_audit` and the rows it holds.
"""

from __future__ import annotations

import re

import asyncpg

from tidings.shared.db import asyncpg_dsn
from tidings.shared.triggers import install_statements

MARKER = "installed by tidings migrate --triggers-only"

_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\(")

_EXISTING = """
SELECT p.proname, obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc AS p
WHERE p.proname = ANY($1::text[]) AND p.pronamespace = current_schema()::regnamespace
"""


def trigger_functions() -> list[str]:
    """Return the functions that `install_statements()` creates.

    Dropping one of them with CASCADE drops its triggers as well.
    """
    names = []
    for statement in install_statements():
        match = _FUNCTION.search(statement)
        if match is not None:
            names.append(match.group(1))
    return names


async def install_triggers(database_url: str) -> list[str]:
    """Install every trigger in one transaction; return the functions it created."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            functions = trigger_functions()
            rows = await conn.fetch(_EXISTING, functions)
            existing = {row["proname"] for row in rows}
            for statement in install_statements():
                await conn.execute(statement)
            created = [name for name in functions if name not in existing]
            for name in created:
                await conn.execute(f"COMMENT ON FUNCTION {name}() IS '{MARKER}'")
    finally:
        await conn.close()
    return created


async def remove_triggers(database_url: str) -> tuple[list[str], list[str]]:
    """Drop the functions the install created, with their triggers.

    Returns the functions dropped and the ones kept because something else
    created them.
    """
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    dropped, kept = [], []
    try:
        async with conn.transaction():
            for row in await conn.fetch(_EXISTING, trigger_functions()):
                name = row["proname"]
                if row["comment"] == MARKER:
                    await conn.execute(f"DROP FUNCTION {name}() CASCADE")
                    dropped.append(name)
                else:
                    kept.append(name)
    finally:
        await conn.close()
    return dropped, kept
