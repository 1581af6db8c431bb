"""End to end: a change committed in Postgres reaches the right SSE streams."""

from __future__ import annotations

import json

import asyncpg

from tests.conftest import Pipeline, User, create_history, create_user
from tests.sse_client import SseStream, open_stream


async def _touch(db: asyncpg.Pool, history_id: int) -> None:
    await db.execute("UPDATE history SET name = name || '.' WHERE id = $1", history_id)


async def _expect_history(stream: SseStream, history_id: int) -> None:
    frame = await stream.next_event()
    assert frame.event == "history_update"
    assert json.loads(frame.data)["history_ids"] == [str(history_id)]


async def _expect_only(
    db: asyncpg.Pool, stream: SseStream, marker_history: int
) -> None:
    """Touch a marker history and check it is the very next event on the stream.

    Changes are handled in commit order, so a duplicate or stray event would
    arrive before the marker.
    """
    await _touch(db, marker_history)
    await _expect_history(stream, marker_history)


async def _user_with_histories(db: asyncpg.Pool, name: str) -> tuple[User, int, int]:
    user = await create_user(db, name)
    return user, await create_history(db, user), await create_history(db, user)


async def test_history_update_one_frame(pipeline: Pipeline):
    """An UPDATE of a history row yields exactly one history_update frame."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await _touch(db, history)

        await _expect_history(stream, history)
        await _expect_only(db, stream, marker)


async def test_dataset_added_one_frame(pipeline: Pipeline):
    """A dataset added to a history yields exactly one history_update frame."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await db.execute(
            """INSERT INTO history_dataset_association (history_id, name, state)
            VALUES ($1, 'reads.fastq', 'queued')""",
            history,
        )

        await _expect_history(stream, history)
        await _expect_only(db, stream, marker)


async def test_collection_added_one_frame(pipeline: Pipeline):
    """A collection added to a history yields exactly one history_update frame."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await db.execute(
            """INSERT INTO history_dataset_collection_association (history_id, name)
            VALUES ($1, 'pairs')""",
            history,
        )

        await _expect_history(stream, history)
        await _expect_only(db, stream, marker)


async def test_statement_many_datasets_one_frame(pipeline: Pipeline):
    """One statement adding many datasets to one history yields one frame."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await db.execute(
            """INSERT INTO history_dataset_association (history_id, name)
            SELECT $1, 'part ' || n FROM generate_series(1, 50) AS n""",
            history,
        )

        await _expect_history(stream, history)
        await _expect_only(db, stream, marker)


async def test_user_isolation(pipeline: Pipeline):
    """User A never receives user B's history event, while B does."""
    db = pipeline.db
    alice, _, alice_marker = await _user_with_histories(db, "alice")
    bob, bob_history, _ = await _user_with_histories(db, "bob")
    await pipeline.settle()

    async with (
        open_stream(pipeline.stream_url, headers=alice.headers) as alice_stream,
        open_stream(pipeline.stream_url, headers=bob.headers) as bob_stream,
    ):
        await _touch(db, bob_history)
        await _expect_history(bob_stream, bob_history)

        await _expect_only(db, alice_stream, alice_marker)


async def test_rolled_back_change_no_frame(pipeline: Pipeline):
    """A rolled-back transaction produces no frame."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        async with db.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("UPDATE history SET name = 'x' WHERE id = $1", history)
            await transaction.rollback()

        await _expect_only(db, stream, marker)


async def test_change_published_after_commit(pipeline: Pipeline):
    """A change inside a transaction reaches the stream only after COMMIT."""
    db = pipeline.db
    alice, history, marker = await _user_with_histories(db, "alice")
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE history SET name = 'x' WHERE id = $1", history)
            await _touch(db, marker)
            await _expect_history(stream, marker)

        await _expect_history(stream, history)


async def test_anonymous_history_reaches_no_user(pipeline: Pipeline):
    """A history with no owner is not delivered to a signed-in user's stream."""
    db = pipeline.db
    alice, _, marker = await _user_with_histories(db, "alice")
    anonymous_history = await create_history(db, None)
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await _touch(db, anonymous_history)

        await _expect_only(db, stream, marker)
