"""Catch-up after `Last-Event-ID`: no gap, no duplicate, and `reset` when it cannot."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import EdgeUnderTest, User, create_user
from tests.sse_client import SseStream, open_stream
from tidings.shared.subjects import EVENTS_STREAM


def _sequence(frame_id: str | None) -> int:
    assert frame_id is not None
    return int(frame_id.split(".")[1])


async def _publish_mixed(
    edge: EdgeUnderTest, alice: User, bob: User, count: int, heard: list[int]
) -> None:
    """Publish `count` events for alice, bob and everyone; note what alice hears."""
    for index in range(count):
        audience = [f"user.{alice.id}", f"user.{bob.id}", "all"][index % 3]
        event_type = "broadcast_update" if audience == "all" else "history_update"
        sequence = await edge.publish(audience, event_type, b'{"n":%d}' % index)
        if audience != f"user.{bob.id}":
            heard.append(sequence)


async def _read_through(stream: SseStream, last: int) -> list[int]:
    """Read event sequences until `last` arrives."""
    sequences: list[int] = []
    while not sequences or sequences[-1] < last:
        frame = await stream.next_event(timeout=15)
        sequences.append(_sequence(frame.id))
    return sequences


async def test_burst_during_replay_no_gap_no_duplicate(edge: EdgeUnderTest, db):
    """Events published while the replay runs follow it once each, in order."""
    alice = await create_user(db, "alice")
    bob = await create_user(db, "bob")
    heard: list[int] = []
    await _publish_mixed(edge, alice, bob, 1500, heard)
    resume_from = heard[100]

    headers = {**alice.headers, "last-event-id": edge.event_id(resume_from)}
    async with open_stream(edge.stream_url, headers=headers) as stream:
        burst = asyncio.create_task(_publish_mixed(edge, alice, bob, 600, heard))
        await burst
        sequences = await _read_through(stream, heard[-1])

    expected = [s for s in heard if s > resume_from]
    assert sequences == expected
    assert stream.status is None


async def test_resume_with_nothing_missed(edge: EdgeUnderTest, db):
    """A client that saw the latest event gets no replay, no reset, then live."""
    alice = await create_user(db, "alice")
    last = await edge.publish(f"user.{alice.id}", "history_update", b"{}")

    headers = {**alice.headers, "last-event-id": edge.event_id(last)}
    async with open_stream(edge.stream_url, headers=headers) as stream:
        await asyncio.sleep(0)
        live = await edge.publish(f"user.{alice.id}", "history_update", b"{}")
        frame = await stream.next_event()

    assert frame.event == "history_update"
    assert _sequence(frame.id) == live
    assert stream.status is None


async def test_last_event_id_query_parameter(edge: EdgeUnderTest, db):
    """`lastEventId` in the query resumes like the header; the header wins."""
    alice = await create_user(db, "alice")
    first = await edge.publish(f"user.{alice.id}", "history_update", b"1")
    second = await edge.publish(f"user.{alice.id}", "history_update", b"2")

    params = {"key": alice.api_key, "lastEventId": edge.event_id(first)}
    async with open_stream(edge.stream_url, params=params) as by_query:
        from_query = await by_query.next_event()
    params["lastEventId"] = "garbage"
    headers = {"last-event-id": edge.event_id(first)}
    async with open_stream(edge.stream_url, params=params, headers=headers) as both:
        from_header = await both.next_event()

    assert _sequence(from_query.id) == second
    assert _sequence(from_header.id) == second


async def _expect_reset(
    edge: EdgeUnderTest, user: User, last_event_id: str, reason: str
) -> None:
    """Connect with `last_event_id`; expect one reset, the status, then live."""
    state = await edge.edge.hub.stream_state()
    headers = {**user.headers, "last-event-id": last_event_id}
    async with open_stream(edge.stream_url, headers=headers) as stream:
        reset = await stream.next_event()
        status = await stream.wait_status()
        live = await edge.publish(f"user.{user.id}", "history_update", b"{}")
        frame = await stream.next_event()

    assert reset.event == "reset"
    assert json.loads(reset.data)["reason"] == reason
    assert reset.id == f"{state.epoch}.{state.last_sequence}"
    assert status.id == reset.id
    assert frame.event == "history_update"
    assert _sequence(frame.id) == live


@pytest.mark.parametrize(
    ("make_id", "reason"),
    [
        (lambda epoch: "garbage", "invalid"),
        (lambda epoch: f"{epoch}.", "invalid"),
        (lambda epoch: f"{epoch}.-1", "invalid"),
        (lambda epoch: f"{epoch}.{'9' * 30}", "invalid"),
        (lambda epoch: "0badf00d.1", "epoch"),
        (lambda epoch: f"{epoch}.999999", "ahead"),
    ],
)
async def test_reset_for_unusable_id(edge: EdgeUnderTest, db, make_id, reason):
    """An id that is garbage, of another epoch or ahead gets a reset."""
    alice = await create_user(db, "alice")
    await edge.publish(f"user.{alice.id}", "history_update", b"{}")

    await _expect_reset(edge, alice, make_id(edge.edge.hub.epoch), reason)


async def test_reset_for_expired_id(edge: EdgeUnderTest, db):
    """An id older than the stream keeps gets a reset; the oldest kept resumes."""
    alice = await create_user(db, "alice")
    sequences = [
        await edge.publish(f"user.{alice.id}", "history_update", b"%d" % i)
        for i in range(10)
    ]
    await edge.nc.jetstream().purge_stream(EVENTS_STREAM, seq=sequences[5])

    await _expect_reset(edge, alice, edge.event_id(sequences[2]), "expired")
    headers = {**alice.headers, "last-event-id": edge.event_id(sequences[4])}
    async with open_stream(edge.stream_url, headers=headers) as stream:
        resumed = [await stream.next_event() for _ in range(5)]

    assert [_sequence(f.id) for f in resumed] == sequences[5:]


async def test_reset_message_names_the_id(edge: EdgeUnderTest, db):
    """The reset message names the rejected id and why it was rejected."""
    alice = await create_user(db, "alice")

    headers = {**alice.headers, "last-event-id": "nonsense"}
    async with open_stream(edge.stream_url, headers=headers) as stream:
        reset = await stream.next_event()

    assert json.loads(reset.data)["message"] == (
        "Last-Event-ID 'nonsense' is not an event id of this server"
    )
