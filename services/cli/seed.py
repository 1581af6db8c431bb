"""Demo data for `tidings up`: an admin, two users and an anonymous session."""

from __future__ import annotations

import secrets

import asyncpg

ADMIN_EMAIL = "admin@example.org"
DEMO_USERS = [
    (ADMIN_EMAIL, "admin", []),
    ("alice@example.org", "alice", ["Alice's RNA-seq", "Alice's scratch"]),
    ("bob@example.org", "bob", ["Bob's variant calling"]),
]
ANONYMOUS_HISTORY = "Unnamed history (anonymous)"


async def seed_demo(database_url: str) -> dict:
    """Insert the demo rows once and return them; later calls only read them."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            if await conn.fetchval("SELECT count(*) FROM galaxy_user") == 0:
                await _insert_demo(conn)
        return await _read_demo(conn)
    finally:
        await conn.close()


async def _insert_demo(conn: asyncpg.Connection) -> None:
    for email, username, histories in DEMO_USERS:
        user_id = await conn.fetchval(
            "INSERT INTO galaxy_user (email, username) VALUES ($1, $2) RETURNING id",
            email,
            username,
        )
        await conn.execute(
            "INSERT INTO api_keys (user_id, key) VALUES ($1, $2)",
            user_id,
            secrets.token_hex(16),
        )
        for name in histories:
            await conn.execute(
                "INSERT INTO history (user_id, name) VALUES ($1, $2)", user_id, name
            )
    history_id = await conn.fetchval(
        "INSERT INTO history (name) VALUES ($1) RETURNING id", ANONYMOUS_HISTORY
    )
    session_id = await conn.fetchval(
        """INSERT INTO galaxy_session (session_key, is_valid, current_history_id)
        VALUES ($1, true, $2) RETURNING id""",
        secrets.token_hex(16),
        history_id,
    )
    await conn.execute(
        """INSERT INTO galaxy_session_to_history (session_id, history_id)
        VALUES ($1, $2)""",
        session_id,
        history_id,
    )


async def _read_demo(conn: asyncpg.Connection) -> dict:
    users = []
    for row in await conn.fetch(
        """SELECT u.id, u.email, min(k.key) AS api_key FROM galaxy_user AS u
        JOIN api_keys AS k ON k.user_id = u.id GROUP BY u.id ORDER BY u.id"""
    ):
        histories = await conn.fetch(
            "SELECT id, name FROM history WHERE user_id = $1 ORDER BY id", row["id"]
        )
        users.append(
            {
                "id": row["id"],
                "email": row["email"],
                "api_key": row["api_key"],
                "is_admin": row["email"] == ADMIN_EMAIL,
                "histories": [{"id": h["id"], "name": h["name"]} for h in histories],
            }
        )
    session = await conn.fetchrow(
        """SELECT s.id, s.current_history_id FROM galaxy_session AS s
        WHERE s.user_id IS NULL ORDER BY s.id LIMIT 1"""
    )
    anonymous = None
    if session is not None:
        anonymous = {
            "session_id": session["id"],
            "history_id": session["current_history_id"],
        }
    return {"users": users, "anonymous_session": anonymous}
