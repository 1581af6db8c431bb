"""Every notification route through HTTP: happy paths, bad input and permissions."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_EMAIL, User, create_user
from tidings.api.app import build_app
from tidings.shared.http import HttpServer
from tidings.shared.settings import Settings

BOOTSTRAP_KEY = secrets.token_hex(16)


@dataclass
class Api:
    """An API server on the test database, with an admin and two users."""

    client: httpx.AsyncClient
    db: asyncpg.Pool
    admin: User
    alice: User
    bob: User

    async def send(self, *users: User, **notification) -> dict:
        """Send a message notification to `users` as the admin; return the body."""
        body = {
            "recipients": {"user_ids": [u.id for u in users]},
            "notification": {
                "source": "admin",
                "category": "message",
                "variant": "info",
                "content": {"category": "message", "subject": "Hi", "message": "M"},
                **notification,
            },
        }
        response = await self.client.post(
            "/notifications", json=body, headers=self.admin.headers
        )
        assert response.status_code == 200, response.text
        return response.json()["notification"]

    async def broadcast(self, **changes) -> dict:
        """Create a broadcast as the admin; return the stored notification."""
        body = {
            "source": "admin",
            "variant": "urgent",
            "content": {"category": "broadcast", "subject": "Down", "message": "Soon"},
            **changes,
        }
        response = await self.client.post(
            "/notifications/broadcast", json=body, headers=self.admin.headers
        )
        assert response.status_code == 200, response.text
        return response.json()["notification"]

    async def row_counts(self) -> tuple:
        """Counts and a fingerprint of every notification row and association."""
        return (
            await self.db.fetchval("SELECT count(*) FROM notification"),
            await self.db.fetchval(
                "SELECT count(*) FROM user_notification_association"
            ),
            await self.db.fetch(
                "SELECT * FROM user_notification_association ORDER BY id"
            ),
            await self.db.fetch("SELECT * FROM notification ORDER BY id"),
        )


@pytest.fixture
async def api(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[Api]:
    """The API alone, serving on a free port, with a bootstrap admin key set."""
    settings = settings.replace(admin_api_key=BOOTSTRAP_KEY)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    server = HttpServer(build_app(settings, pool), "127.0.0.1", settings.api_port)
    await server.start()
    base_url = f"http://127.0.0.1:{settings.api_port}/api"
    admin = await create_user(db, ADMIN_EMAIL.split("@")[0])
    alice, bob = await create_user(db, "alice"), await create_user(db, "bob")
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            yield Api(client, db, admin, alice, bob)
    finally:
        await server.stop()
        await pool.close()


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC).replace(tzinfo=None) + delta).isoformat()


async def _ids(api: Api, user: User, **params) -> list[str]:
    response = await api.client.get(
        "/notifications", params=params, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return [n["id"] for n in response.json()]


def _assert_names(response: httpx.Response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert field in response.text, response.text


# User notifications


async def test_list_newest_first_paged(api: Api):
    """The list contains the caller's notifications, newest first, in pages."""
    old = await api.send(api.alice, publication_time=_iso(-timedelta(hours=3)))
    mid = await api.send(api.alice, publication_time=_iso(-timedelta(hours=2)))
    new = await api.send(api.alice, publication_time=_iso(-timedelta(hours=1)))

    first_page = await _ids(api, api.alice, limit=2)
    second_page = await _ids(api, api.alice, limit=2, offset=2)

    assert first_page == [new["id"], mid["id"]]
    assert second_page == [old["id"]]


async def test_list_only_active_own(api: Api):
    """Scheduled, expired, deleted and other users' notifications are not listed."""
    shown = await api.send(api.alice)
    await api.send(api.alice, publication_time=_iso(timedelta(days=1)))
    expired = await api.send(api.alice)
    await api.db.execute(
        "UPDATE notification SET expiration_time = now() AT TIME ZONE 'UTC'"
        " WHERE id = $1",
        int(expired["id"]),
    )
    deleted = await api.send(api.alice)
    await api.client.delete(
        f"/notifications/{deleted['id']}", headers=api.alice.headers
    )
    await api.send(api.bob)

    assert await _ids(api, api.alice) == [shown["id"]]


async def test_show_one(api: Api):
    """A recipient reads their notification; others get 404."""
    sent = await api.send(api.alice)

    mine = await api.client.get(
        f"/notifications/{sent['id']}", headers=api.alice.headers
    )
    theirs = await api.client.get(
        f"/notifications/{sent['id']}", headers=api.bob.headers
    )
    unknown = await api.client.get("/notifications/999999", headers=api.alice.headers)

    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["id"] == sent["id"]
    assert body["content"] == {"category": "message", "subject": "Hi", "message": "M"}
    assert body["seen_time"] is None
    assert body["deleted"] is False
    assert theirs.status_code == 404
    assert unknown.status_code == 404
    assert "999999" in unknown.json()["detail"]


async def test_mark_seen_then_unseen(api: Api):
    """PUT seen=true stores a seen time; seen=false clears it."""
    sent = await api.send(api.alice)
    url = f"/notifications/{sent['id']}"

    seen = await api.client.put(url, json={"seen": True}, headers=api.alice.headers)
    after_seen = (await api.client.get(url, headers=api.alice.headers)).json()
    unseen = await api.client.put(url, json={"seen": False}, headers=api.alice.headers)
    after_unseen = (await api.client.get(url, headers=api.alice.headers)).json()

    assert seen.status_code == 204, seen.text
    assert after_seen["seen_time"] is not None
    assert unseen.status_code == 204, unseen.text
    assert after_unseen["seen_time"] is None


async def test_update_others_row_404(api: Api):
    """A user cannot mark another user's notification, and the row is unchanged."""
    sent = await api.send(api.alice)
    before = await api.row_counts()

    response = await api.client.put(
        f"/notifications/{sent['id']}", json={"seen": True}, headers=api.bob.headers
    )

    assert response.status_code == 404
    assert await api.row_counts() == before


async def test_delete_one(api: Api):
    """DELETE marks the notification deleted: it leaves the list and show gives 404."""
    sent = await api.send(api.alice)
    url = f"/notifications/{sent['id']}"

    response = await api.client.delete(url, headers=api.alice.headers)

    assert response.status_code == 204, response.text
    assert (await api.client.get(url, headers=api.alice.headers)).status_code == 404
    assert await _ids(api, api.alice) == []
    deleted = await api.db.fetchval(
        "SELECT deleted FROM user_notification_association WHERE user_id = $1",
        api.alice.id,
    )
    assert deleted is True
    again = await api.client.delete(url, headers=api.bob.headers)
    assert again.status_code == 404


async def test_bulk_update_own_rows(api: Api):
    """PUT /notifications changes the caller's rows and skips others' ids."""
    first, second = await api.send(api.alice), await api.send(api.alice)
    bobs = await api.send(api.bob)
    body = {
        "notification_ids": [int(first["id"]), int(second["id"]), int(bobs["id"])],
        "changes": {"seen": True},
    }

    response = await api.client.put(
        "/notifications", json=body, headers=api.alice.headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"updated_count": 2}
    bob_seen = await api.db.fetchval(
        "SELECT seen_time FROM user_notification_association WHERE user_id = $1",
        api.bob.id,
    )
    assert bob_seen is None
    for sent in (first, second):
        shown = await api.client.get(
            f"/notifications/{sent['id']}", headers=api.alice.headers
        )
        assert shown.json()["seen_time"] is not None


async def test_bulk_delete_own_rows(api: Api):
    """DELETE /notifications with ids deletes the caller's rows only."""
    first = await api.send(api.alice)
    bobs = await api.send(api.bob)
    body = {"notification_ids": [int(first["id"]), int(bobs["id"])]}

    response = await api.client.request(
        "DELETE", "/notifications", json=body, headers=api.alice.headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"updated_count": 1}
    assert await _ids(api, api.alice) == []
    assert await _ids(api, api.bob) == [bobs["id"]]


async def test_status_since(api: Api):
    """Status counts unread and returns what was published or changed since then."""
    before = _iso(-timedelta(minutes=1))
    old = await api.send(api.alice, publication_time=_iso(-timedelta(days=2)))
    await api.db.execute(
        "UPDATE user_notification_association SET update_time = $1",
        datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2),
    )
    fresh = await api.send(api.alice)
    seen = await api.send(api.alice)
    await api.client.put(
        f"/notifications/{seen['id']}", json={"seen": True}, headers=api.alice.headers
    )
    broadcast = await api.broadcast()

    response = await api.client.get(
        "/notifications/status", params={"since": before}, headers=api.alice.headers
    )
    anonymous = await api.client.get("/notifications/status", params={"since": before})

    assert response.status_code == 200, response.text
    status = response.json()
    assert status["total_unread_count"] == 2
    changed = {n["id"] for n in status["notifications"]}
    assert changed == {fresh["id"], seen["id"]}
    assert old["id"] not in changed
    assert [b["id"] for b in status["broadcasts"]] == [broadcast["id"]]
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json() == {
        "total_unread_count": 0,
        "notifications": [],
        "broadcasts": status["broadcasts"],
    }


async def test_status_since_with_offset(api: Api):
    """A `since` with a UTC offset is compared in UTC."""
    sent = await api.send(api.alice)
    later = datetime.now(UTC) + timedelta(minutes=10)
    in_berlin = later.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
    earlier = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()

    after = await api.client.get(
        "/notifications/status", params={"since": in_berlin}, headers=api.alice.headers
    )
    before = await api.client.get(
        "/notifications/status", params={"since": earlier}, headers=api.alice.headers
    )

    assert after.json()["notifications"] == []
    assert [n["id"] for n in before.json()["notifications"]] == [sent["id"]]


# Broadcasts


async def test_broadcast_create_and_read(api: Api):
    """An admin's broadcast is listed and shown to everyone, with its action links."""
    links = [{"action_name": "Read more", "link": "https://example.org/news"}]
    content = {
        "category": "broadcast",
        "subject": "S",
        "message": "M",
        "action_links": links,
    }
    created = await api.broadcast(content=content)

    listed = await api.client.get("/notifications/broadcast")
    shown = await api.client.get(f"/notifications/broadcast/{created['id']}")

    assert created["category"] == "broadcast"
    assert created["content"]["action_links"] == links
    assert listed.status_code == 200, listed.text
    assert [b["id"] for b in listed.json()] == [created["id"]]
    assert shown.status_code == 200, shown.text
    assert shown.json()["content"] == content


async def test_broadcast_inactive_admin_only(api: Api):
    """Scheduled and expired broadcasts are hidden from users but shown to admins."""
    scheduled = await api.broadcast(publication_time=_iso(timedelta(days=1)))
    expired = await api.broadcast(
        publication_time=_iso(-timedelta(days=2)),
        expiration_time=_iso(-timedelta(days=1)),
    )
    active = await api.broadcast()

    as_user = await api.client.get(
        "/notifications/broadcast", headers=api.alice.headers
    )
    as_admin = await api.client.get(
        "/notifications/broadcast", headers=api.admin.headers
    )
    scheduled_as_user = await api.client.get(
        f"/notifications/broadcast/{scheduled['id']}", headers=api.alice.headers
    )
    scheduled_as_admin = await api.client.get(
        f"/notifications/broadcast/{scheduled['id']}", headers=api.admin.headers
    )

    assert [b["id"] for b in as_user.json()] == [active["id"]]
    all_ids = {b["id"] for b in as_admin.json()}
    assert all_ids == {scheduled["id"], expired["id"], active["id"]}
    assert scheduled_as_user.status_code == 404
    assert scheduled_as_admin.status_code == 200


async def test_broadcast_update(api: Api):
    """An admin edits a broadcast; fields left out keep their values."""
    created = await api.broadcast()
    url = f"/notifications/broadcast/{created['id']}"
    new_content = {"category": "broadcast", "subject": "Back", "message": "Done"}

    response = await api.client.put(
        url, json={"variant": "info", "content": new_content}, headers=api.admin.headers
    )
    shown = (await api.client.get(url)).json()

    assert response.status_code == 204, response.text
    assert shown["variant"] == "info"
    assert shown["content"] == {**new_content, "action_links": None}
    assert shown["source"] == created["source"]
    assert shown["publication_time"] == created["publication_time"]


async def test_broadcast_update_expires_it(api: Api):
    """Setting the expiration to now withdraws the broadcast from users."""
    created = await api.broadcast(publication_time=_iso(-timedelta(hours=1)))
    url = f"/notifications/broadcast/{created['id']}"

    response = await api.client.put(
        url, json={"expiration_time": _iso(timedelta(0))}, headers=api.admin.headers
    )

    assert response.status_code == 204, response.text
    assert (await api.client.get(url)).status_code == 404


async def test_broadcast_update_unknown_404(api: Api):
    """Updating an unknown id, or a notification that is no broadcast, is 404."""
    personal = await api.send(api.alice)

    for notification_id in ("999999", personal["id"]):
        response = await api.client.put(
            f"/notifications/broadcast/{notification_id}",
            json={"variant": "info"},
            headers=api.admin.headers,
        )
        assert response.status_code == 404, response.text


# Permissions


async def test_admin_routes_forbidden_to_users(api: Api):
    """Users get 403 from every admin route and nothing is written."""
    created = await api.broadcast()
    before = await api.row_counts()
    send = {
        "recipients": {"user_ids": [api.bob.id]},
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "S", "message": "M"},
        },
    }
    requests = [
        ("POST", "/notifications", send),
        ("POST", "/notifications/broadcast", _broadcast_body()),
        ("PUT", f"/notifications/broadcast/{created['id']}", {"variant": "info"}),
    ]

    for method, url, body in requests:
        response = await api.client.request(
            method, url, json=body, headers=api.alice.headers
        )
        _assert_names(response, 403, "admin")

    assert await api.row_counts() == before


async def test_user_routes_need_a_user(api: Api):
    """No key is 401; the bootstrap admin key, which has no user, is 403."""
    bootstrap = {"x-api-key": BOOTSTRAP_KEY}
    requests = [
        ("GET", "/notifications", None),
        ("GET", "/notifications/1", None),
        ("PUT", "/notifications/1", {"seen": True}),
        ("DELETE", "/notifications/1", None),
        ("PUT", "/notifications", {"notification_ids": [1], "changes": {"seen": True}}),
        ("DELETE", "/notifications", {"notification_ids": [1]}),
    ]

    for method, url, body in requests:
        anonymous = await api.client.request(method, url, json=body)
        as_bootstrap = await api.client.request(
            method, url, json=body, headers=bootstrap
        )
        assert anonymous.status_code == 401, (method, url, anonymous.text)
        assert as_bootstrap.status_code == 403, (method, url, as_bootstrap.text)


async def test_bootstrap_key_is_admin(api: Api):
    """The bootstrap admin key may send notifications and broadcasts."""
    body = {
        "recipients": {"user_ids": [api.alice.id]},
        "notification": {
            "source": "admin",
            "category": "new_shared_item",
            "variant": "info",
            "content": {
                "category": "new_shared_item",
                "item_type": "history",
                "item_name": "RNA-seq",
                "owner_name": "bob",
                "slug": "rna-seq",
            },
        },
    }

    response = await api.client.post(
        "/notifications", json=body, headers={"x-api-key": BOOTSTRAP_KEY}
    )

    assert response.status_code == 200, response.text
    assert response.json()["notification"]["content"]["item_name"] == "RNA-seq"


async def test_wrong_key_401(api: Api):
    """An unknown API key is 401 even on routes open to anonymous callers."""
    response = await api.client.get(
        "/notifications/broadcast", headers={"x-api-key": "0" * 32}
    )

    assert response.status_code == 401


# Bad input


MALFORMED_IDS = ["abc", "0", "99999999999", "-1", "1.5"]


async def test_malformed_path_ids_400(api: Api):
    """A malformed id in any path gets 400 naming notification_id."""
    for bad in MALFORMED_IDS:
        requests = [
            ("GET", f"/notifications/{bad}", None, api.alice),
            ("PUT", f"/notifications/{bad}", {"seen": True}, api.alice),
            ("DELETE", f"/notifications/{bad}", None, api.alice),
            ("GET", f"/notifications/broadcast/{bad}", None, api.alice),
            ("PUT", f"/notifications/broadcast/{bad}", {"variant": "info"}, api.admin),
        ]
        for method, url, body, user in requests:
            response = await api.client.request(
                method, url, json=body, headers=user.headers
            )
            _assert_names(response, 400, "notification_id")


BAD_QUERIES = [
    ("/notifications", {"limit": "0"}, "limit"),
    ("/notifications", {"limit": "x"}, "limit"),
    ("/notifications", {"offset": "-1"}, "offset"),
    ("/notifications/status", {}, "since"),
    ("/notifications/status", {"since": "yesterday"}, "since"),
]


async def test_bad_query_parameters_400(api: Api):
    """Bad paging or `since` values get 400 naming the parameter."""
    for url, params, field in BAD_QUERIES:
        response = await api.client.get(url, params=params, headers=api.alice.headers)
        _assert_names(response, 400, field)


async def test_bad_user_updates_400(api: Api):
    """Bad update bodies get 400 naming the field, and change no row."""
    sent = await api.send(api.alice)
    url = f"/notifications/{sent['id']}"
    before = await api.row_counts()
    seen = {"seen": True}
    cases = [
        ("PUT", url, {}, "seen"),
        ("PUT", url, {"seen": "yes"}, "seen"),
        ("PUT", url, {"seen": True, "starred": True}, "starred"),
        ("PUT", "/notifications", {"notification_ids": [1], "changes": {}},
         "changes.seen"),
        ("PUT", "/notifications", {"notification_ids": ["x"], "changes": seen},
         "notification_ids[0]"),
        ("PUT", "/notifications", {"changes": seen}, "notification_ids"),
        ("PUT", "/notifications",
         {"notification_ids": list(range(1, 1002)), "changes": seen},
         "notification_ids"),
        ("DELETE", "/notifications", {"notification_ids": [0]}, "notification_ids[0]"),
        ("DELETE", "/notifications", {}, "notification_ids"),
    ]  # fmt: skip

    for method, target, body, field in cases:
        response = await api.client.request(
            method, target, json=body, headers=api.alice.headers
        )
        _assert_names(response, 400, field)

    assert await api.row_counts() == before


def _broadcast_body(**changes) -> dict:
    return {
        "source": "admin",
        "variant": "info",
        "content": {"category": "broadcast", "subject": "S", "message": "M"},
        **changes,
    }


BAD_BROADCASTS = [
    ("variant", _broadcast_body(variant="loud")),
    ("category", _broadcast_body(category="message")),
    (
        "content.category",
        _broadcast_body(
            content={"category": "message", "subject": "S", "message": "M"}
        ),
    ),
    (
        "`subject`",
        _broadcast_body(content={"category": "broadcast", "message": "M"}),
    ),
    (
        "content.action_links[0].link",
        _broadcast_body(
            content={
                "category": "broadcast",
                "subject": "S",
                "message": "M",
                "action_links": [{"action_name": "Go", "link": "javascript:alert(1)"}],
            }
        ),
    ),
    (
        "expiration_time",
        _broadcast_body(
            publication_time="2030-01-02T00:00:00",
            expiration_time="2030-01-01T00:00:00",
        ),
    ),
    ("publication_time", _broadcast_body(publication_time="soon")),
    ("source", _broadcast_body(source="")),
]


async def test_bad_broadcasts_400(api: Api):
    """Bad broadcast bodies get 400 naming the field, and store nothing."""
    before = await api.row_counts()

    for field, body in BAD_BROADCASTS:
        response = await api.client.post(
            "/notifications/broadcast", json=body, headers=api.admin.headers
        )
        _assert_names(response, 400, field)

    assert await api.row_counts() == before


async def test_bad_broadcast_updates_400(api: Api):
    """Bad broadcast updates get 400 naming the field, and change nothing."""
    created = await api.broadcast(
        publication_time="2030-01-01T00:00:00", expiration_time="2030-06-01T00:00:00"
    )
    url = f"/notifications/broadcast/{created['id']}"
    before = await api.row_counts()
    cases = [
        ("source", {}),
        ("expiration_time", {"expiration_time": "2029-01-01T00:00:00"}),
        ("expiration_time", {"publication_time": "2031-01-01T00:00:00"}),
        ("content.category", {"content": {"category": "message", "subject": "S"}}),
        ("variant", {"variant": 3}),
    ]

    for field, body in cases:
        response = await api.client.put(url, json=body, headers=api.admin.headers)
        _assert_names(response, 400, field)

    assert await api.row_counts() == before


async def test_bad_send_rejected_whole(api: Api):
    """A send naming one unknown group stores neither notification nor associations."""
    group = await api.db.fetchval(
        "INSERT INTO galaxy_group (name) VALUES ('lab') RETURNING id"
    )
    await api.db.execute(
        "INSERT INTO user_group_association (user_id, group_id) VALUES ($1, $2)",
        api.alice.id,
        group,
    )
    body = {
        "recipients": {"user_ids": [api.bob.id], "group_ids": [group, 424242]},
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "S", "message": "M"},
        },
    }
    before = await api.row_counts()

    response = await api.client.post(
        "/notifications", json=body, headers=api.admin.headers
    )

    _assert_names(response, 400, "recipients.group_ids")
    assert "424242" in response.text
    assert await api.row_counts() == before


async def test_stored_content_round_trips(api: Api):
    """The content stored in Postgres is Galaxy's JSON, category included."""
    sent = await api.send(api.alice)

    stored = await api.db.fetchval(
        "SELECT content FROM notification WHERE id = $1", int(sent["id"])
    )

    assert json.loads(stored) == {
        "category": "message",
        "subject": "Hi",
        "message": "M",
    }
