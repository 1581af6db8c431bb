"""Each kind of change reaches exactly its audience: users, sessions or everyone.

Events are read from `TIDINGS_EVENTS` by subject, after `Pipeline.settle()`
has seen every earlier change become an event. Anonymous sessions are
checked on their subjects directly.
"""

from __future__ import annotations

import json
import secrets

import asyncpg
import httpx

from tests.conftest import ADMIN_EMAIL, Pipeline, User, create_history, create_user
from tests.sse_client import open_stream
from tests.stored_events import StoredEvent, last_sequence, read_events
from tidings.shared.subjects import ALL_AUDIENCE, session_audience, user_audience


async def _touch(db: asyncpg.Pool, history_id: int) -> None:
    await db.execute("UPDATE history SET name = name || '.' WHERE id = $1", history_id)


async def _anonymous_session(
    db: asyncpg.Pool, history_id: int | None
) -> tuple[int, str]:
    """Insert an anonymous session using `history_id`; return its id and key."""
    key = secrets.token_hex(16)
    session_id = await db.fetchval(
        "INSERT INTO galaxy_session (session_key, is_valid) VALUES ($1, true)"
        " RETURNING id",
        key,
    )
    if history_id is not None:
        await db.execute(
            "INSERT INTO galaxy_session_to_history (session_id, history_id)"
            " VALUES ($1, $2)",
            session_id,
            history_id,
        )
    return session_id, key


async def _events(pipeline: Pipeline, audience: str, after: int) -> list[StoredEvent]:
    return await read_events(pipeline.settings.nats_url, audience, after)


def _summary(events: list[StoredEvent]) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.event_type, e.ids) for e in events]


def _distinct(events: list[StoredEvent]) -> set[tuple[str, tuple[str, ...]]]:
    # The bridge may fold changes of one row made in quick succession into
    # one, so tests of several changes to one row compare distinct events.
    return set(_summary(events))


def _message(recipients: dict, **notification) -> dict:
    return {
        "recipients": recipients,
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "S", "message": "M"},
            **notification,
        },
    }


async def _post(pipeline: Pipeline, admin: User, url: str, body: dict) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{pipeline.api_url}{url}", json=body, headers=admin.headers
        )
    assert response.status_code == 200, response.text
    return response.json()


async def test_overlapping_recipients_one_event_each(pipeline: Pipeline):
    """Users named directly and through groups and roles get one event each."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    users = [await create_user(db, f"user{i}") for i in range(6)]
    ids = [u.id for u in users]
    lab, core = [
        await db.fetchval("INSERT INTO galaxy_group (name) VALUES ($1) RETURNING id", n)
        for n in ("lab", "core")
    ]
    staff, ops = [
        await db.fetchval("INSERT INTO role (name) VALUES ($1) RETURNING id", n)
        for n in ("staff", "ops")
    ]
    await db.executemany(
        "INSERT INTO user_group_association (user_id, group_id) VALUES ($1, $2)",
        [(ids[0], lab), (ids[1], lab), (ids[1], core), (ids[2], core)],
    )
    await db.executemany(
        "INSERT INTO user_role_association (user_id, role_id) VALUES ($1, $2)",
        [(ids[2], staff), (ids[3], staff), (ids[0], staff), (ids[4], ops)],
    )
    # Group `core` carries role `ops`, so ops' members are reached through core.
    await db.execute(
        "INSERT INTO group_role_association (group_id, role_id) VALUES ($1, $2)",
        core,
        ops,
    )
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)

    recipients = {"user_ids": [ids[0], ids[1]], "group_ids": [lab, core]}
    created = await _post(
        pipeline, admin, "/notifications", _message({**recipients, "role_ids": [staff]})
    )
    await pipeline.settle()

    notification_id = created["notification"]["id"]
    assert created["total_notifications_sent"] == 5
    for user in users[:5]:
        events = await _events(pipeline, user_audience(user.id), start)
        assert _summary(events) == [("notification_update", (notification_id,))]
    assert await _events(pipeline, user_audience(users[5].id), start) == []


async def test_seen_reaches_own_tabs_only(pipeline: Pipeline):
    """Marking a notification seen updates the user's tabs, not other recipients."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice, bob = await create_user(db, "alice"), await create_user(db, "bob")
    bob_marker = await create_history(db, bob)
    await pipeline.settle()

    async with (
        open_stream(pipeline.stream_url, headers=alice.headers) as alice_tab,
        open_stream(pipeline.stream_url, headers=alice.headers) as alice_other_tab,
        open_stream(pipeline.stream_url, headers=bob.headers) as bob_tab,
        httpx.AsyncClient() as client,
    ):
        created = await _post(
            pipeline,
            admin,
            "/notifications",
            _message({"user_ids": [alice.id, bob.id]}),
        )
        notification_id = created["notification"]["id"]
        for tab in (alice_tab, alice_other_tab, bob_tab):
            frame = await tab.next_event()
            assert frame.event == "notification_update"

        response = await client.put(
            f"{pipeline.api_url}/notifications/{notification_id}",
            json={"seen": True},
            headers=alice.headers,
        )
        assert response.status_code == 204, response.text

        for tab in (alice_tab, alice_other_tab):
            frame = await tab.next_event()
            assert frame.event == "notification_update"
            assert json.loads(frame.data)["notification_ids"] == [notification_id]
        await _touch(db, bob_marker)
        frame = await bob_tab.next_event()
        assert frame.event == "history_update"
        assert json.loads(frame.data)["history_ids"] == [str(bob_marker)]


async def test_anonymous_history_session_only(pipeline: Pipeline):
    """An anonymous history's change reaches its session's subject and no other."""
    db = pipeline.db
    alice = await create_user(db, "alice")
    first, second = await create_history(db, None), await create_history(db, None)
    _, first_key = await _anonymous_session(db, first)
    _, second_key = await _anonymous_session(db, second)
    first_audience = session_audience(first_key)
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)

    await _touch(db, first)
    await pipeline.settle()

    first_events = await _events(pipeline, first_audience, start)
    assert _summary(first_events) == [("history_update", (str(first),))]
    assert await _events(pipeline, session_audience(second_key), start) == []
    assert await _events(pipeline, user_audience(alice.id), start) == []
    assert first_key not in first_events[0].msg_id
    assert first_key not in first_events[0].audience


async def test_adopted_history_reaches_user(pipeline: Pipeline):
    """After login adopts an anonymous history, its changes reach the user only."""
    db = pipeline.db
    alice = await create_user(db, "alice")
    history = await create_history(db, None)
    session_id, key = await _anonymous_session(db, history)
    await _touch(db, history)
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)

    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE galaxy_session SET user_id = $2 WHERE id = $1", session_id, alice.id
        )
        await conn.execute(
            "UPDATE history SET user_id = $2 WHERE id = $1", history, alice.id
        )
    await _touch(db, history)
    await pipeline.settle()

    user_events = await _events(pipeline, user_audience(alice.id), start)
    assert _distinct(user_events) == {("history_update", (str(history),))}
    assert await _events(pipeline, session_audience(key), start) == []


async def test_session_joining_history_hears_it(pipeline: Pipeline):
    """A session that starts using a history hears its next change."""
    db = pipeline.db
    history = await create_history(db, None)
    await _touch(db, history)
    await pipeline.settle()
    _, key = await _anonymous_session(db, history)
    start = await last_sequence(pipeline.settings.nats_url)

    await _touch(db, history)
    await pipeline.settle()

    events = await _events(pipeline, session_audience(key), start)
    assert _summary(events) == [("history_update", (str(history),))]


async def test_entry_point_reaches_job_owner(pipeline: Pipeline):
    """An entry point's changes reach its job's owner, or the job's session."""
    db = pipeline.db
    alice, bob = await create_user(db, "alice"), await create_user(db, "bob")
    session_id, session_key = await _anonymous_session(db, None)
    alice_job = await db.fetchval(
        "INSERT INTO job (user_id, state) VALUES ($1, 'running') RETURNING id", alice.id
    )
    anonymous_job = await db.fetchval(
        "INSERT INTO job (session_id, state) VALUES ($1, 'running') RETURNING id",
        session_id,
    )
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)

    entry_point = await db.fetchval(
        "INSERT INTO interactivetool_entry_point (job_id, name) VALUES ($1, 'jupyter')"
        " RETURNING id",
        alice_job,
    )
    await db.execute(
        "UPDATE interactivetool_entry_point SET configured = true WHERE id = $1",
        entry_point,
    )
    anonymous_entry_point = await db.fetchval(
        "INSERT INTO interactivetool_entry_point (job_id, name) VALUES ($1, 'rstudio')"
        " RETURNING id",
        anonymous_job,
    )
    await pipeline.settle()

    alice_events = await _events(pipeline, user_audience(alice.id), start)
    expected = ("entry_point_update", (str(entry_point),))
    assert _distinct(alice_events) == {expected}
    assert alice_events[0].data["job_ids"] == [str(alice_job)]
    session_events = await _events(pipeline, session_audience(session_key), start)
    assert _summary(session_events) == [
        ("entry_point_update", (str(anonymous_entry_point),))
    ]
    assert await _events(pipeline, user_audience(bob.id), start) == []


async def test_broadcast_reaches_all(pipeline: Pipeline):
    """Creating and updating a broadcast each publish one event to `all`."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice = await create_user(db, "alice")
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)
    body = {
        "source": "admin",
        "variant": "warning",
        "content": {"category": "broadcast", "subject": "S", "message": "M"},
    }

    created = await _post(pipeline, admin, "/notifications/broadcast", body)
    broadcast_id = created["notification"]["id"]
    async with httpx.AsyncClient() as client:
        response = await client.put(
            f"{pipeline.api_url}/notifications/broadcast/{broadcast_id}",
            json={"variant": "urgent"},
            headers=admin.headers,
        )
    assert response.status_code == 204, response.text
    await pipeline.settle()

    events = await _events(pipeline, ALL_AUDIENCE, start)
    assert _distinct(events) == {("broadcast_update", (broadcast_id,))}
    assert await _events(pipeline, user_audience(alice.id), start) == []


async def test_scheduled_notification_not_early(pipeline: Pipeline):
    """A notification scheduled for later is not announced when it is sent."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice = await create_user(db, "alice")
    await pipeline.settle()
    start = await last_sequence(pipeline.settings.nats_url)

    body = _message({"user_ids": [alice.id]}, publication_time="2099-01-01T00:00:00")
    await _post(pipeline, admin, "/notifications", body)
    await pipeline.settle()

    assert await _events(pipeline, user_audience(alice.id), start) == []
