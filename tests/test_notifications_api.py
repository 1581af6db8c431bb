"""The notification API stores notifications that reach exactly their recipients."""

from __future__ import annotations

import json

import httpx

from tests.conftest import ADMIN_EMAIL, Pipeline, create_history, create_user
from tests.sse_client import open_stream


def _message(**changes) -> dict:
    body = {
        "recipients": {"user_ids": []},
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "Hi", "message": "Hello"},
        },
    }
    body["recipients"].update(changes.pop("recipients", {}))
    body["notification"].update(changes)
    return body


async def test_notification_reaches_recipients_only(pipeline: Pipeline):
    """A notification for A and B reaches both streams and not C's."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice, bob, carol = [await create_user(db, n) for n in ("alice", "bob", "carol")]
    carol_history = await create_history(db, carol)
    await pipeline.settle()

    async with (
        open_stream(pipeline.stream_url, headers=alice.headers) as alice_stream,
        open_stream(pipeline.stream_url, headers=bob.headers) as bob_stream,
        open_stream(pipeline.stream_url, headers=carol.headers) as carol_stream,
        httpx.AsyncClient() as client,
    ):
        body = _message(recipients={"user_ids": [alice.id, bob.id]})
        response = await client.post(
            f"{pipeline.api_url}/notifications", json=body, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        created = response.json()
        assert created["total_notifications_sent"] == 2
        notification_id = created["notification"]["id"]

        for stream in (alice_stream, bob_stream):
            frame = await stream.next_event()
            assert frame.event == "notification_update"
            assert json.loads(frame.data)["notification_ids"] == [notification_id]

        await db.execute("UPDATE history SET name = 'x' WHERE id = $1", carol_history)
        frame = await carol_stream.next_event()
        assert frame.event == "history_update"


async def test_notification_rows_written(pipeline: Pipeline):
    """Creating a notification stores one row and one association per recipient."""
    db = pipeline.db
    admin = await create_user(db, "admin")
    alice = await create_user(db, "alice")

    async with httpx.AsyncClient() as client:
        body = _message(recipients={"user_ids": [alice.id, alice.id]})
        response = await client.post(
            f"{pipeline.api_url}/notifications", json=body, headers=admin.headers
        )

    assert response.status_code == 200, response.text
    assert response.json()["total_notifications_sent"] == 1
    rows = await db.fetch("SELECT user_id FROM user_notification_association")
    assert [r["user_id"] for r in rows] == [alice.id]
    content = await db.fetchval("SELECT content FROM notification")
    assert json.loads(content)["subject"] == "Hi"


async def test_non_admin_gets_403(pipeline: Pipeline):
    """A valid but non-admin API key cannot create notifications."""
    alice = await create_user(pipeline.db, "alice")

    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{pipeline.api_url}/notifications",
            json=_message(recipients={"user_ids": [alice.id]}),
            headers=alice.headers,
        )

    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    assert await pipeline.db.fetchval("SELECT count(*) FROM notification") == 0


async def test_missing_or_wrong_key_gets_401(pipeline: Pipeline):
    """No key or an unknown key is rejected with 401."""
    async with httpx.AsyncClient() as client:
        missing = await client.post(f"{pipeline.api_url}/notifications", json={})
        wrong = await client.post(
            f"{pipeline.api_url}/notifications",
            json=_message(recipients={"user_ids": [1]}),
            headers={"x-api-key": "0" * 32},
        )

    assert missing.status_code in (400, 401)
    assert wrong.status_code == 401


BAD_BODIES = [
    ("notification.category", _message(category="mesage")),
    ("notification.variant", _message(variant="loud")),
    ("notification.content", _message(content={"category": "message"})),
    ("recipients.user_ids", {**_message(), "recipients": {"user_ids": ["x"]}}),
    ("`source`", {"recipients": {}, "notification": {"category": "message"}}),
]


async def test_malformed_body_names_field(pipeline: Pipeline):
    """A malformed body gets 400 with a message naming the bad field."""
    admin = await create_user(pipeline.db, "admin")

    async with httpx.AsyncClient() as client:
        for field, body in BAD_BODIES:
            response = await client.post(
                f"{pipeline.api_url}/notifications", json=body, headers=admin.headers
            )
            assert response.status_code == 400, (field, response.text)
            assert field in response.text, (field, response.text)

        not_json = await client.post(
            f"{pipeline.api_url}/notifications",
            content=b"{not json",
            headers={**admin.headers, "content-type": "application/json"},
        )
    assert not_json.status_code == 400
    assert await pipeline.db.fetchval("SELECT count(*) FROM notification") == 0


async def test_semantic_errors_rejected(pipeline: Pipeline):
    """Unknown recipients, mismatched content and bad times are rejected whole."""
    admin = await create_user(pipeline.db, "admin")
    alice = await create_user(pipeline.db, "alice")
    cases = [
        ("recipients.user_ids", _message(recipients={"user_ids": [alice.id, 999999]})),
        (
            "notification.content.category",
            _message(
                category="new_shared_item",
                content={"category": "message", "subject": "s", "message": "m"},
                recipients={"user_ids": [alice.id]},
            ),
        ),
        (
            "expiration_time",
            _message(
                publication_time="2030-01-02T00:00:00",
                expiration_time="2030-01-01T00:00:00",
                recipients={"user_ids": [alice.id]},
            ),
        ),
        ("recipients", _message()),
    ]

    async with httpx.AsyncClient() as client:
        for field, body in cases:
            response = await client.post(
                f"{pipeline.api_url}/notifications", json=body, headers=admin.headers
            )
            assert response.status_code == 400, (field, response.text)
            assert field in response.text, (field, response.text)

    assert await pipeline.db.fetchval("SELECT count(*) FROM notification") == 0


async def test_expired_notification_not_delivered(pipeline: Pipeline):
    """A notification that is already expired when sent reaches no stream."""
    db = pipeline.db
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice = await create_user(db, "alice")
    marker = await create_history(db, alice)
    await pipeline.settle()

    async with (
        open_stream(pipeline.stream_url, headers=alice.headers) as stream,
        httpx.AsyncClient() as client,
    ):
        body = _message(
            recipients={"user_ids": [alice.id]},
            publication_time="2020-01-01T00:00:00",
        )
        response = await client.post(
            f"{pipeline.api_url}/notifications", json=body, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        await pipeline.settle()
        await db.execute("UPDATE history SET name = 'marker' WHERE id = $1", marker)
        frame = await stream.next_event()

    assert frame.event == "history_update"
    assert json.loads(frame.data)["history_ids"] == [str(marker)]
