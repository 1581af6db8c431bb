"""The demo page's admin form posts through the API and the page hears the result."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_EMAIL, Pipeline, create_user
from tests.test_browser import browser  # noqa: F401 (a fixture)
from tidings.shared.settings import Settings

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Settings that let the demo page call the API on its own port."""
    edge_origin = f"http://127.0.0.1:{settings.edge_port}"
    return settings.replace(
        cors_origins=edge_origin,
        api_public_url=f"http://127.0.0.1:{settings.api_port}/api",
    )


async def test_admin_form_posts_broadcast(pipeline: Pipeline, browser):  # noqa: F811
    """A broadcast posted from the demo form appears on the page as a broadcast."""
    await create_user(pipeline.db, ADMIN_EMAIL.split("@")[0])
    alice = await create_user(pipeline.db, "alice")
    await pipeline.settle()
    page = await browser.new_page()

    await page.goto(f"{pipeline.edge_url}/demo")
    await page.select_option("#user", str(alice.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)
    await page.select_option("#target", "broadcast")
    await page.fill("#subject", "Upgrade tonight")
    await page.click('#admin button[type="submit"]')
    broadcast = await page.wait_for_selector("#broadcasts li.broadcast", timeout=10_000)
    event = await page.wait_for_selector(
        'li.event[data-type="broadcast_update"]', timeout=10_000
    )

    assert "Upgrade tonight" in await broadcast.inner_text()
    assert await event.is_visible()
    assert await page.inner_text("#admin-result") == "posted"


async def test_admin_form_message_rings_bell(pipeline: Pipeline, browser):  # noqa: F811
    """A message posted from the demo form raises the recipient's unread count."""
    await create_user(pipeline.db, ADMIN_EMAIL.split("@")[0])
    alice = await create_user(pipeline.db, "alice")
    await pipeline.settle()
    page = await browser.new_page()

    await page.goto(f"{pipeline.edge_url}/demo")
    await page.select_option("#user", str(alice.id))
    await page.wait_for_selector('#state[data-state="open"]', timeout=10_000)
    await page.select_option("#target", str(alice.id))
    await page.click('#admin button[type="submit"]')
    await page.wait_for_selector('#unread[data-count="1"]', timeout=10_000)

    assert await page.inner_text("#unread") == "1"
