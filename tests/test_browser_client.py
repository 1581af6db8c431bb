"""tidings.js and the demo page in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    TOKEN_SECRET,
    EdgeUnderTest,
    Pipeline,
    create_history,
    create_user,
)
from tests.edge_process import start_edge_process
from tests.test_browser import browser  # noqa: F401 (a fixture)
from tidings.shared.embedded import free_port

pytestmark = pytest.mark.browser

_OPEN_CLIENT = """async (key) => {
    const { tidings } = await import("/static/tidings.js");
    const client = tidings({ params: { key } });
    window.client = client;
    window.received = [];
    window.stopFirst = client.subscribe("history_update", (data) => {
        received.push(["first", data]);
    });
    window.stopSecond = client.subscribe("history_update", (data) => {
        received.push(["second", data]);
    });
    await new Promise((resolve) => client.onState((s) => s === "open" && resolve()));
}"""

_IFRAME_CLIENT = """async (key) => {
    const { tidings } = await import("/static/tidings.js");
    const client = tidings({ params: { key } });
    client.subscribe("history_update", () => {});
    return client.state;
}"""


async def _wait_for(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def _streams(base_url: str) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{base_url}/api/events/stats")
    return response.json()["streams"]


async def test_two_subscribers_share_one_connection(edge: EdgeUnderTest, db, browser):  # noqa: F811
    """Two subscribers in one tab share one stream, which closes after the last."""
    alice = await create_user(db, "alice")
    page = await browser.new_page()
    await page.goto(f"{edge.url}/healthz")

    await page.evaluate(_OPEN_CLIENT, alice.api_key)
    streams_open = await _streams(edge.url)
    await edge.publish(f"user.{alice.id}", "history_update", b'{"history_ids":["7"]}')
    await _wait_for(lambda: page.evaluate("received.length === 2"))
    sources = await page.evaluate("client.sourcesOpened")
    await page.evaluate("stopFirst()")
    state_after_first = await page.evaluate("client.state")
    await page.evaluate("stopSecond()")
    await _wait_for(lambda: _is_zero(_streams(edge.url)))

    assert streams_open == 1
    assert sources == 1
    assert await page.evaluate("received.map((r) => r[0]).sort()") == [
        "first",
        "second",
    ]
    assert state_after_first == "open"
    assert await page.evaluate("client.state") == "idle"


async def _is_zero(count) -> bool:
    return await count == 0


async def test_no_stream_inside_iframe(edge: EdgeUnderTest, db, browser):  # noqa: F811
    """A page inside an iframe opens no stream, leaving it to the top page."""
    alice = await create_user(db, "alice")
    page = await browser.new_page()
    await page.goto(f"{edge.url}/healthz")
    await page.evaluate(
        """() => new Promise((resolve) => {
            const frame = document.createElement("iframe");
            frame.onload = resolve;
            frame.src = "/healthz";
            document.body.append(frame);
        })"""
    )

    state = await page.frames[1].evaluate(_IFRAME_CLIENT, alice.api_key)

    assert state == "disabled"
    assert await _streams(edge.url) == 0


async def _history_ids_shown(page) -> list[tuple[str, list[str]]]:
    items = await page.query_selector_all('li.event[data-type="history_update"]')
    shown = []
    for item in items:
        data = json.loads(await item.get_attribute("data-payload") or "{}")
        shown.append((await item.get_attribute("data-id"), data["history_ids"]))
    return shown


async def test_page_resumes_after_edge_restart(
    pipeline: Pipeline,
    browser,  # noqa: F811
    tmp_path: Path,
):
    """After the edge restarts, the page's own EventSource reconnects with
    Last-Event-ID and shows what happened meanwhile exactly once."""
    alice = await create_user(pipeline.db, "alice")
    histories = [await create_history(pipeline.db, alice, f"h{i}") for i in range(5)]
    await pipeline.settle()
    port = free_port()
    extra = {"demo": "true", "token_secret": TOKEN_SECRET, "retry_ms": "500"}
    log = tmp_path / "edge.log"
    edge = await start_edge_process(pipeline.settings, port, log, **extra)
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{port}/demo")
    await page.select_option("#user", str(alice.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)
    await page.click(f'button[data-history-id="{histories[0]}"]')
    await page.wait_for_selector('li.event[data-type="history_update"]')

    edge.send_signal(signal.SIGTERM)
    await asyncio.wait_for(edge.wait(), 15)
    for history in histories[1:4]:
        await pipeline.db.execute(
            "UPDATE history SET name = name || '.' WHERE id = $1", history
        )
    await pipeline.settle()
    edge = await start_edge_process(pipeline.settings, port, log, **extra)
    try:
        await page.wait_for_selector('#state[data-state="open"]', timeout=15_000)
        await _wait_for(lambda: _count_shown(page, 4))
        await page.click(f'button[data-history-id="{histories[4]}"]')
        await _wait_for(lambda: _count_shown(page, 5))
        shown = await _history_ids_shown(page)
        sources = await page.evaluate("window.tidingsDemo.client.sourcesOpened")
    finally:
        edge.send_signal(signal.SIGTERM)
        await asyncio.wait_for(edge.wait(), 15)

    ids = [event_id for event_id, _ in shown]
    assert len(ids) == 5
    assert len(set(ids)) == 5
    assert sorted(h for _, hs in shown for h in hs) == sorted(map(str, histories))
    assert sources == 1
    resumed = [
        line
        for line in log.read_text().splitlines()
        if '"stream opened"' in line and '"start": "resume"' in line
    ]
    assert resumed
    assert '"last_event_id_from": "header"' in resumed[0]


async def _count_shown(page, count: int) -> bool:
    items = await page.query_selector_all('li.event[data-type="history_update"]')
    return len(items) >= count
