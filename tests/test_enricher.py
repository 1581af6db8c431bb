"""The enricher gives up on poison changes and keeps every replica's cache fresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.conftest import Pipeline, create_history, create_user
from tidings.enricher import audience
from tidings.enricher.audience import Lookups
from tidings.enricher.deadletter import DELIVERIES_HEADER, REASON_HEADER
from tidings.enricher.service import Enricher
from tidings.shared.events import Change, encode
from tidings.shared.settings import Settings
from tidings.shared.subjects import (
    DEAD_LETTERS_STREAM,
    change_subject,
    dead_letter_subject,
)

MAX_DELIVER = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Few deliveries, so a change that keeps failing is given up on quickly."""
    return settings.replace(enricher_max_deliver=MAX_DELIVER)


@pytest.fixture
async def js(pipeline: Pipeline) -> AsyncIterator[JetStreamContext]:
    """A JetStream client, with the dead letters of earlier tests purged."""
    nc = await nats.connect(pipeline.settings.nats_url)
    jetstream = nc.jetstream()
    await jetstream.purge_stream(DEAD_LETTERS_STREAM)
    yield jetstream
    await nc.close()


def _change(kind: str, key: str) -> bytes:
    return encode(Change(kind=kind, key=key, commit_time=datetime.now(UTC)))


async def _dead_letter(js: JetStreamContext, subject: str, timeout: float = 15.0):
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await js.get_last_msg(DEAD_LETTERS_STREAM, subject)
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.05)


POISON = [
    ("tidings.change.history.abc", _change("history", "abc"), "not a row id"),
    ("tidings.change.history.0", _change("history", "0"), "not a row id"),
    ("tidings.change.mystery.1", _change("mystery", "1"), "no resolver"),
    ("tidings.change.history.7", b"{not json", "undecodable"),
]


def _sample(name: str) -> float:
    """Return a counter of this process's enrichers, 0 before its first use."""
    return REGISTRY.get_sample_value(name) or 0.0


async def test_poison_given_up_at_once(pipeline: Pipeline, js: JetStreamContext):
    """Changes no retry can fix go to the dead letters on their first delivery."""
    dead_before = _sample("tidings_enricher_dead_lettered_total")
    with capture_logs() as logs:
        for subject, data, _ in POISON:
            await js.publish(subject, data)

        letters = [await _dead_letter(js, dead_letter_subject(s)) for s, *_ in POISON]

    for (_, data, reason), letter in zip(POISON, letters, strict=True):
        assert letter.data == data
        assert reason in letter.headers[REASON_HEADER]
        assert letter.headers[DELIVERIES_HEADER] == "1"
    given_up = [e for e in logs if e["event"] == "change given up"]
    assert {e["subject"] for e in given_up} == {s for s, *_ in POISON}
    assert all(e["log_level"] == "error" and e["reason"] for e in given_up)
    dead_after = _sample("tidings_enricher_dead_lettered_total")
    assert dead_after - dead_before == len(POISON)
    await pipeline.settle()


async def test_failing_change_bounded_deliveries(
    pipeline: Pipeline, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
):
    """A change whose resolver keeps failing is given up after the last delivery."""
    attempts: list[str] = []

    async def always_fails(lookups: Lookups, change: Change) -> None:
        attempts.append(change.key)
        raise RuntimeError(f"resolver bug on {change.key}")

    monkeypatch.setitem(audience.RESOLVERS, "broken", always_fails)
    subject = change_subject("broken", "5")
    redelivered_before = _sample("tidings_enricher_redeliveries_total")

    with capture_logs() as logs:
        await js.publish(subject, _change("broken", "5"))
        letter = await _dead_letter(js, dead_letter_subject(subject))

    assert attempts == ["5"] * MAX_DELIVER
    assert letter.headers[DELIVERIES_HEADER] == str(MAX_DELIVER)
    assert "resolver bug on 5" in letter.headers[REASON_HEADER]
    retries = [e for e in logs if e["event"] == "change failed; will be redelivered"]
    assert [e["deliveries"] for e in retries] == list(range(1, MAX_DELIVER))
    redelivered = _sample("tidings_enricher_redeliveries_total") - redelivered_before
    assert redelivered == MAX_DELIVER - 1
    await pipeline.settle()


async def test_invalidation_reaches_every_replica(pipeline: Pipeline):
    """An ownership change drops the cached audience in every replica."""
    db = pipeline.db
    alice = await create_user(db, "alice")
    history = await create_history(db, None)
    tag = f"history:{history}"
    replicas = [Enricher(pipeline.settings.replace(enricher_port=0)) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    stale = ["stale rows"]
    try:
        for replica in replicas:
            replica.cache.put(tag, stale, [tag], replica.cache.generation)
            assert replica.cache.get(tag) is stale

        await db.execute(
            "UPDATE history SET user_id = $2 WHERE id = $1", history, alice.id
        )

        # A replica that handles the history's change caches fresh rows again.
        async with asyncio.timeout(10):
            while any(replica.cache.get(tag) is stale for replica in replicas):
                await asyncio.sleep(0.02)
    finally:
        for replica in replicas:
            await replica.stop()
