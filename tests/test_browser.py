"""The demo page in a real headless Chromium receives live events."""

from __future__ import annotations

import shutil

import pytest
from playwright.async_api import async_playwright

from tests.conftest import Pipeline, create_history, create_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser():
    """Debian's Chromium driven by Playwright; no browser is downloaded."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


async def test_demo_page_shows_history_update(pipeline: Pipeline, browser):
    """Clicking "Change it" on the demo page shows the history_update it causes."""
    alice = await create_user(pipeline.db, "alice")
    history = await create_history(pipeline.db, alice, "RNA-seq")
    await pipeline.settle()
    page = await browser.new_page()

    await page.goto(f"{pipeline.edge_url}/demo")
    await page.select_option("#user", str(alice.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)
    await page.click(f'button[data-history-id="{history}"]')
    event = await page.wait_for_selector(
        'li.event[data-type="history_update"]', timeout=10_000
    )

    assert f'"{history}"' in await event.inner_text()


async def test_demo_switch_clears_events(pipeline: Pipeline, browser):
    """Switching user empties the event list, so it shows only that user's events."""
    alice = await create_user(pipeline.db, "alice")
    bob = await create_user(pipeline.db, "bob")
    alice_history = await create_history(pipeline.db, alice, "RNA-seq")
    await create_history(pipeline.db, bob, "variants")
    await pipeline.settle()
    page = await browser.new_page()
    await page.goto(f"{pipeline.edge_url}/demo")
    await page.select_option("#user", str(alice.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)
    await page.click(f'button[data-history-id="{alice_history}"]')
    await page.wait_for_selector('li.event[data-type="history_update"]', timeout=10_000)

    await page.select_option("#user", str(bob.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)

    assert await page.locator('li.event[data-type="history_update"]').count() == 0
