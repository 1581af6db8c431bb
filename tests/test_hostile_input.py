"""Hostile input gets a clear 4xx, never a 500, and changes no row."""

from __future__ import annotations

import httpx

from tests.conftest import Pipeline, create_history, create_user


def _body(**notification) -> dict:
    return {
        "recipients": {"user_ids": [notification.pop("user_id")]},
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "s", "message": "m"},
            **notification,
        },
    }


async def test_api_rejects_hostile_bodies(pipeline: Pipeline):
    """Deep nesting, NUL bytes and odd hosts are 4xx and store nothing."""
    admin = await create_user(pipeline.db, "admin")
    alice = await create_user(pipeline.db, "alice")
    url = f"{pipeline.api_url}/notifications"
    nul_subject = _body(user_id=alice.id)
    nul_subject["notification"]["content"]["subject"] = "a\u0000b"

    async with httpx.AsyncClient() as client:
        nested = await client.post(
            url,
            content=b"[" * 5000 + b"]" * 5000,
            headers={**admin.headers, "content-type": "application/json"},
        )
        nul_source = await client.post(
            url,
            json=_body(user_id=alice.id, source="ad\u0000min"),
            headers=admin.headers,
        )
        nul_content = await client.post(url, json=nul_subject, headers=admin.headers)
        long_host = await client.post(
            url,
            json=_body(user_id=alice.id),
            headers={**admin.headers, "host": "h" * 300},
        )

    assert nested.status_code == 400, nested.text
    assert "nested" in nested.json()["detail"]
    assert nul_source.status_code == 400, nul_source.text
    assert "notification.source" in nul_source.text
    assert nul_content.status_code == 400, nul_content.text
    assert "subject" in nul_content.text
    assert long_host.status_code == 200, long_host.text
    assert await pipeline.db.fetchval("SELECT count(*) FROM notification") == 1


async def test_nul_in_api_key_is_401(pipeline: Pipeline):
    """An API key with a NUL byte is an invalid key on the API and the edge."""
    async with httpx.AsyncClient() as client:
        api = await client.get(
            f"{pipeline.api_url}/notifications", params={"key": "ab\u0000cd"}
        )
        edge = await client.get(pipeline.stream_url, params={"key": "ab\u0000cd"})

    assert api.status_code == 401, api.text
    assert edge.status_code == 401, edge.text


async def test_demo_touch_out_of_range_id(pipeline: Pipeline):
    """A history id beyond the column's range is a 400 on the demo route."""
    alice = await create_user(pipeline.db, "alice")
    await create_history(pipeline.db, alice)

    async with httpx.AsyncClient() as client:
        huge = await client.post(
            f"{pipeline.edge_url}/demo/histories/99999999999/touch",
            headers=alice.headers,
        )

    assert huge.status_code == 400, huge.text
    assert "history_id" in huge.text


async def test_demo_users_only_for_local_host(pipeline: Pipeline):
    """The demo's API keys are not served to a page on another host name."""
    await create_user(pipeline.db, "alice")

    async with httpx.AsyncClient() as client:
        foreign = await client.get(
            f"{pipeline.edge_url}/demo/users", headers={"host": "attacker.example"}
        )
        local = await client.get(f"{pipeline.edge_url}/demo/users")

    assert foreign.status_code == 403, foreign.text
    assert "attacker.example" in foreign.text
    assert local.status_code == 200
    assert local.json()[0]["email"] == "alice@example.org"
