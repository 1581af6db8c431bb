"""The `notification_status` event a fresh stream starts with."""

from __future__ import annotations

import json

import asyncpg

from tests.conftest import EdgeUnderTest, create_user
from tests.sse_client import open_stream

_NOTIFICATION = """
INSERT INTO notification
    (source, category, variant, content, publication_time, expiration_time)
VALUES ('admin', $1, 'info', $2,
        (now() AT TIME ZONE 'UTC') + make_interval(hours => $3),
        (now() AT TIME ZONE 'UTC') + make_interval(hours => $4))
RETURNING id
"""


async def _notification(
    db: asyncpg.Pool, category: str, published: int = -1, expires: int = 24
) -> int:
    content = json.dumps({"category": category, "subject": "s", "message": "m"})
    return await db.fetchval(_NOTIFICATION, category, content, published, expires)


async def _deliver(
    db: asyncpg.Pool, notification_id: int, user_id: int, *, seen=False, deleted=False
) -> None:
    await db.execute(
        """INSERT INTO user_notification_association
            (user_id, notification_id, seen_time, deleted)
        VALUES ($1, $2, CASE WHEN $3 THEN now() ELSE NULL END, $4)""",
        user_id,
        notification_id,
        seen,
        deleted,
    )


async def test_status_counts_unread_and_lists_broadcasts(edge: EdgeUnderTest, db):
    """Only active, unseen, undeleted notifications count; active broadcasts show."""
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")
    unread = await _notification(db, "message")
    await _deliver(db, unread, alice.id)
    await _deliver(db, await _notification(db, "message"), alice.id, seen=True)
    await _deliver(db, await _notification(db, "message"), alice.id, deleted=True)
    await _deliver(db, await _notification(db, "message", -48, -24), alice.id)
    await _deliver(db, await _notification(db, "message", 24, 48), alice.id)
    await _deliver(db, await _notification(db, "message"), bob.id)
    active = await _notification(db, "broadcast")
    await _notification(db, "broadcast", -48, -24)
    await _notification(db, "broadcast", 24, 48)

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        status = await stream.wait_status()

    data = json.loads(status.data)
    assert data["total_unread_count"] == 1
    assert [b["id"] for b in data["broadcasts"]] == [str(active)]
    assert data["broadcasts"][0]["content"]["subject"] == "s"
    assert data["broadcasts"][0]["publication_time"].endswith("Z")


async def test_status_id_resumes_without_gap(edge: EdgeUnderTest, db):
    """The status frame's id resumes right after the events the client skipped."""
    alice = await create_user(db, "alice")
    await edge.publish(f"user.{alice.id}", "history_update", b"before")

    async with open_stream(edge.stream_url, headers=alice.headers) as stream:
        status = await stream.wait_status()
    after = await edge.publish(f"user.{alice.id}", "history_update", b"after")
    headers = {**alice.headers, "last-event-id": status.id}
    async with open_stream(edge.stream_url, headers=headers) as resumed:
        frame = await resumed.next_event()

    assert frame.data == "after"
    assert frame.id == edge.event_id(after)
