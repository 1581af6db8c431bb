"""Who may open a stream: stream tokens, API keys and Galaxy session cookies."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time

import asyncpg
import httpx
import pytest

from tests.conftest import TOKEN_SECRET, EdgeUnderTest, create_user
from tests.sse_client import open_stream
from tidings.edge.galaxy_cookie import SessionCookieDecoder
from tidings.edge.tokens import TokenSigner
from tidings.shared.errors import ConfigurationError
from tidings.shared.subjects import session_audience

ID_SECRET = "galaxy-id-secret-for-tests"


def _token(user_id: int, ttl: float = 60.0, now: float | None = None) -> str:
    return TokenSigner(TOKEN_SECRET, ttl).mint(f"user.{user_id}", user_id, now=now)


async def _run_token_command(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "TIDINGS_TOKEN_SECRET": TOKEN_SECRET,
        "TIDINGS_DATABASE_URL": database_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli.main",
        "token",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def _refusal(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, **kwargs)


async def _create_session(db: asyncpg.Pool, user_id: int | None, valid=True) -> str:
    key = secrets.token_hex(16)
    await db.execute(
        """INSERT INTO galaxy_session (user_id, session_key, is_valid)
        VALUES ($1, $2, $3)""",
        user_id,
        key,
        valid,
    )
    return key


async def test_token_in_query_or_bearer(edge: EdgeUnderTest, db):
    """A stream token works as `token=` and as an `Authorization: Bearer` header."""
    alice = await create_user(db, "alice")
    token = _token(alice.id)

    async with (
        open_stream(edge.stream_url, params={"token": token}) as by_query,
        open_stream(
            edge.stream_url, headers={"authorization": f"Bearer {token}"}
        ) as by_header,
    ):
        await by_query.wait_status()
        await by_header.wait_status()
        sequence = await edge.publish(f"user.{alice.id}", "history_update", b"{}")
        from_query = await by_query.next_event()
        from_header = await by_header.next_event()

    assert from_query.id == edge.event_id(sequence)
    assert from_header.id == edge.event_id(sequence)


async def test_token_for_a_never_yields_b(edge: EdgeUnderTest, db):
    """A token for user A hears A's and everyone's events, never B's."""
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")

    async with open_stream(edge.stream_url, params={"token": _token(alice.id)}) as s:
        await s.wait_status()
        await edge.publish(f"user.{bob.id}", "history_update", b'{"who":"bob"}')
        await edge.publish("all", "broadcast_update", b'{"who":"all"}')
        await edge.publish(f"user.{alice.id}", "history_update", b'{"who":"alice"}')
        first = await s.next_event()
        second = await s.next_event()

    assert first.data == '{"who":"all"}'
    assert second.data == '{"who":"alice"}'
    assert s.frames.empty()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-token", "token_invalid"),
        ("e30.AAAA", "token_invalid"),
        ("é.x", "token_invalid"),
    ],
)
async def test_bad_token_gets_401(edge: EdgeUnderTest, token, reason):
    """A malformed or forged token gets 401 with a JSON reason."""
    response = await _refusal(edge.stream_url, params={"token": token})

    assert response.status_code == 401
    assert response.json()["reason"] == reason


async def test_tampered_token_gets_401(edge: EdgeUnderTest, db):
    """A token whose payload was changed no longer verifies."""
    alice = await create_user(db, "alice")
    signature = _token(alice.id).split(".")[1]
    forged = TokenSigner("another-secret-0123456789", 60).mint("user.1", 1)

    tampered = await _refusal(
        edge.stream_url, params={"token": f"{forged.split('.')[0]}.{signature}"}
    )
    foreign = await _refusal(edge.stream_url, params={"token": forged})

    assert tampered.status_code == 401
    assert tampered.json()["reason"] == "token_invalid"
    assert foreign.json()["detail"] == "stream token signature is not valid"


async def test_expired_token_gets_401(edge: EdgeUnderTest, db):
    """An expired token gets 401 with reason `token_expired`."""
    alice = await create_user(db, "alice")
    token = _token(alice.id, ttl=10, now=time.time() - 60)

    response = await _refusal(edge.stream_url, params={"token": token})

    assert response.status_code == 401
    assert response.json()["reason"] == "token_expired"
    assert "request a new one" in response.json()["detail"]


async def test_token_route_mints_for_api_key(edge: EdgeUnderTest, db):
    """POST /api/events/token trades an API key for a token that opens a stream."""
    alice = await create_user(db, "alice")

    async with httpx.AsyncClient() as client:
        minted = await client.post(
            f"{edge.url}/api/events/token", headers=alice.headers
        )
    token = minted.json()["token"]
    async with open_stream(edge.stream_url, params={"token": token}) as stream:
        await stream.wait_status()
        await edge.publish(f"user.{alice.id}", "history_update", b"{}")
        frame = await stream.next_event()

    assert minted.status_code == 200
    assert minted.json()["expires_in"] == int(edge.settings.token_ttl_seconds)
    assert frame.event == "history_update"


async def test_token_route_refuses_without_credentials(edge: EdgeUnderTest, db):
    """The token route needs an API key or a session; a token does not renew."""
    alice = await create_user(db, "alice")

    async with httpx.AsyncClient() as client:
        anonymous = await client.post(f"{edge.url}/api/events/token")
        renewal = await client.post(
            f"{edge.url}/api/events/token",
            headers={"authorization": f"Bearer {_token(alice.id)}"},
        )
        wrong_key = await client.post(
            f"{edge.url}/api/events/token", headers={"x-api-key": "f" * 32}
        )

    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "credentials_missing"
    assert renewal.status_code == 401
    assert wrong_key.status_code == 401
    assert wrong_key.json()["reason"] == "api_key_invalid"


async def test_token_route_disabled_without_secret(start_edge, db):
    """With no TIDINGS_TOKEN_SECRET the token route names the setting."""
    under_test = await start_edge(token_secret="")
    alice = await create_user(db, "alice")

    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{under_test.url}/api/events/token", headers=alice.headers
        )

    assert response.status_code == 503
    assert "TIDINGS_TOKEN_SECRET" in response.json()["detail"]


async def test_cli_token_opens_stream(edge: EdgeUnderTest, db):
    """`tidings token --email` prints a token the edge accepts."""
    alice = await create_user(db, "alice")

    code, stdout, stderr = await _run_token_command(
        edge.settings.database_url, "--email", alice.email
    )
    async with open_stream(edge.stream_url, params={"token": stdout.strip()}) as stream:
        status = await stream.wait_status()

    assert code == 0, stderr
    assert status.event == "notification_status"


async def test_cli_token_unknown_email(edge: EdgeUnderTest):
    """`tidings token` names an unknown email and exits non-zero."""
    code, _, stderr = await _run_token_command(
        edge.settings.database_url, "--email", "no@x.org"
    )

    assert code == 2
    assert "no user with email 'no@x.org'" in stderr


async def test_session_cookie_of_user(start_edge, db):
    """Galaxy's encrypted session cookie opens the stream of the session's user."""
    under_test = await start_edge(id_secret=ID_SECRET)
    alice = await create_user(db, "alice")
    key = await _create_session(db, alice.id)
    cookie = SessionCookieDecoder(ID_SECRET).encode(key)

    async with open_stream(
        under_test.stream_url, headers={"cookie": f"other=1; galaxysession={cookie}"}
    ) as stream:
        await stream.wait_status()
        await under_test.publish(f"user.{alice.id}", "history_update", b"{}")
        frame = await stream.next_event()

    assert frame.event == "history_update"


async def test_anonymous_session_hears_its_audience(start_edge, db):
    """An anonymous session hears its hashed session audience and `all`."""
    under_test = await start_edge(id_secret=ID_SECRET)
    key = await _create_session(db, None)
    other = await _create_session(db, None)
    cookie = SessionCookieDecoder(ID_SECRET).encode(key)

    async with open_stream(
        under_test.stream_url, headers={"cookie": f"galaxysession={cookie}"}
    ) as stream:
        status = await stream.wait_status()
        await under_test.publish(session_audience(other), "history_update", b"1")
        await under_test.publish(session_audience(key), "history_update", b"2")
        await under_test.publish("all", "broadcast_update", b"3")
        frames = [await stream.next_event() for _ in range(2)]

    assert '"total_unread_count":0' in status.data
    assert [f.data for f in frames] == ["2", "3"]


async def test_bad_session_cookie_gets_401(start_edge, db):
    """A cookie that decodes to no valid session gets 401 `session_invalid`."""
    under_test = await start_edge(id_secret=ID_SECRET)
    alice = await create_user(db, "alice")
    invalid = await _create_session(db, alice.id, valid=False)
    cookies = SessionCookieDecoder(ID_SECRET)

    for value in ["zz", "00" * 8, cookies.encode(invalid), cookies.encode("nope")]:
        response = await _refusal(
            under_test.stream_url, headers={"cookie": f"galaxysession={value}"}
        )
        assert response.status_code == 401
        assert response.json()["reason"] == "session_invalid"


def test_cookie_round_trip_matches_galaxy_padding():
    """Keys are padded with `!` to a multiple of 8, a whole block when aligned."""
    cookies = SessionCookieDecoder(ID_SECRET)

    aligned = cookies.encode("a" * 32)
    short = cookies.encode("abc")

    assert len(bytes.fromhex(aligned)) == 40
    assert len(bytes.fromhex(short)) == 8
    assert cookies.decode(aligned) == "a" * 32
    assert cookies.decode(short) == "abc"


async def test_api_key_wins_over_cookie(start_edge, db):
    """With an API key and a cookie, the key decides, even when the cookie is bad."""
    under_test = await start_edge(id_secret=ID_SECRET)
    alice = await create_user(db, "alice")
    headers = {**alice.headers, "cookie": "galaxysession=garbage"}

    async with open_stream(under_test.stream_url, headers=headers) as stream:
        status = await stream.wait_status()

    assert status.event == "notification_status"


def test_short_token_secret_rejected():
    """A token secret under 16 characters is a configuration error."""
    with pytest.raises(ConfigurationError) as caught:
        TokenSigner("short", 60)

    assert "at least 16 characters" in str(caught.value)


def test_id_secret_length_checked():
    """An id secret Blowfish cannot use is named with its length."""
    with pytest.raises(ConfigurationError) as caught:
        SessionCookieDecoder("x" * 57)

    assert str(caught.value) == (
        "TIDINGS_ID_SECRET must be 4 to 56 bytes long, as Galaxy's id_secret; it is 57"
    )


def test_token_without_secret_names_setting():
    """Minting with no secret names the setting that enables tokens."""
    with pytest.raises(ConfigurationError) as caught:
        TokenSigner("", 60).mint("user.1", 1)

    assert "TIDINGS_TOKEN_SECRET" in str(caught.value)
