"""The dashboard as an operator uses it, in Debian's Chromium driven by Playwright, on
both databases: the service runs with its worker against the fake Codat, and every step
is a click or a key press."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import EventStatus
from app.sandbox.fake_codat import FakeCodat
from tests.support.browser import (
    OTHER_COMPANY,
    launch_chromium,
    make_scene,
    serve,
    served_settings,
    settled,
    sign_in,
    statuses,
    until,
)
from tests.support.flow import COMPANY, until_called


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        yield chromium
        await chromium.close()


@pytest.fixture
async def site(
    database_url: str,
    engine: AsyncEngine,
    fake_codat_server: tuple[FakeCodat, str],
    fake_codat: FakeCodat,
) -> AsyncIterator[str]:
    async with serve(served_settings(database_url, fake_codat_server[1]), engine) as base_url:
        await make_scene(base_url, engine, fake_codat)
        yield base_url


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield await context.new_page()
    await context.close()


def event_rows(page: Page) -> Any:
    return page.locator("table.list tbody tr a[href^='/ui/events/']")


async def test_an_operator_signs_in_replays_refreshes_and_signs_out(
    site: str, page: Page, engine: AsyncEngine, fake_codat: FakeCodat
) -> None:
    refused = await page.goto(f"{site}/ui/events")
    assert refused is not None and refused.status == 401
    await sign_in(page, site)
    assert await page.locator("svg.chart rect").count() == 3 * 24
    await page.get_by_role("link", name="Needs re-authorisation").wait_for()

    # Filter the events, open one, replay it, and see it processed again.
    await page.get_by_role("navigation").get_by_role("link", name="Events").click()
    await page.get_by_label("Event type").fill("read.completed.initial")
    await page.get_by_role("button", name="Filter").click()
    assert await event_rows(page).count() == 2
    await page.get_by_label("Status").select_option("dead")
    await page.get_by_label("Event type").fill("")
    await page.get_by_role("button", name="Filter").click()
    assert await event_rows(page).count() == 3
    await page.get_by_label("Status").select_option("processed")
    await page.get_by_label("Event type").fill("read.completed.initial")
    await page.get_by_role("button", name="Filter").click()
    await event_rows(page).first.click()
    await page.get_by_role("heading", name="Payload").wait_for()
    await page.get_by_role("heading", name="Timeline").wait_for()
    event_id = int(page.url.rsplit("/", 1)[-1])
    processed_before = (await page.locator("time").all_inner_texts())[-1]
    await page.get_by_role("button", name="Replay").click()
    await page.get_by_text("Queued again").wait_for()

    async def processed_again() -> bool:
        return (await statuses(engine))[event_id] == EventStatus.PROCESSED

    await until(processed_again)
    await page.reload()
    assert await page.locator(".badge").inner_text() == "processed"
    assert (await page.locator("time").all_inner_texts())[-1] != processed_before

    # A company's page; Refresh reaches the fake Codat through the worker.
    await page.get_by_role("navigation").get_by_role("link", name="Companies").click()
    await page.get_by_role("link", name="Toft stores").click()
    await page.get_by_role("heading", name="Toft stores").wait_for()
    fake_codat.reset_calls()
    await page.get_by_role("button", name="Refresh").click()
    await page.get_by_text("Refresh queued").wait_for()
    await until_called(fake_codat, f"/companies/{COMPANY}/data/queue/", within=10)

    # Dead events by filter: the count first, then the replay.
    await page.get_by_role("navigation").get_by_role("link", name="Events").click()
    await page.get_by_label("Status").select_option("dead")
    await page.get_by_role("button", name="Filter").click()
    await page.get_by_role("link", name="Replay these…").click()
    await page.get_by_text("3 event(s) would be queued again").wait_for()
    assert list((await statuses(engine)).values()).count(EventStatus.DEAD) == 3
    await page.get_by_role("button", name="Replay 3 event(s)").click()
    await page.get_by_text("Queued 3 event(s) again").wait_for()

    async def none_dead() -> bool:
        return await settled(engine) and EventStatus.DEAD not in (await statuses(engine)).values()

    await until(none_dead, within=20)

    # Signing out: the next page is refused.
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("heading", name="Sign in").wait_for()
    await page.get_by_text("You have signed out.").wait_for()
    again = await page.goto(f"{site}/ui")
    assert again is not None and again.status == 401
    assert await page.get_by_role("heading", name="Overview").count() == 0


async def dashboard_pages(page: Page, site: str, engine: AsyncEngine) -> list[str]:
    event_id = max(await statuses(engine))
    return [
        f"{site}/ui",
        f"{site}/ui/events",
        f"{site}/ui/events?status=dead",
        f"{site}/ui/events/{event_id}",
        f"{site}/ui/events/replay?status=dead",
        f"{site}/ui/companies",
        f"{site}/ui/companies/{COMPANY}",
        f"{site}/ui/companies/{OTHER_COMPANY}",
        f"{site}/ui/writes",
        f"{site}/ui/companies/nobody",  # the error page
    ]


async def test_no_page_has_a_serious_accessibility_violation(
    site: str, page: Page, engine: AsyncEngine
) -> None:
    axe = Axe()
    found: dict[str, list[str]] = {}
    await page.goto(f"{site}/ui/sign-in")
    urls = [f"{site}/ui/sign-in"]
    report = await axe.run(page)
    pages = [(urls[0], report)]
    await sign_in(page, site)
    for url in await dashboard_pages(page, site, engine):
        await page.goto(url)
        pages.append((url, await axe.run(page)))
    for url, result in pages:
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']}"
            for v in result.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        if bad:
            found[url] = bad
    assert found == {}
    assert len(pages) == 11


# Everything a mouse could use; what a closed <details> hides is not there to use.
INTERACTIVE = """() => {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary,'
    + ' [tabindex]:not([tabindex="-1"])';
  const found = [...document.querySelectorAll(selector)].filter(
    (el) => el.getClientRects().length > 0 && !el.disabled);
  found.forEach((el, i) => el.setAttribute('data-kb', String(i)));
  return found.map((el) => el.outerHTML.slice(0, 80));
}"""


async def keyboard_misses(page: Page, url: str) -> list[str]:
    """The controls of the page at `url` that pressing Tab never reaches."""
    await page.goto(url)
    controls: list[str] = await page.evaluate(INTERACTIVE)
    assert controls, url
    reached: set[int] = set()
    # A date-time field takes a Tab for each of its parts: allow a few presses each.
    for _ in range(4 * len(controls) + 20):
        if len(reached) == len(controls):
            break
        await page.keyboard.press("Tab")
        marker = await page.evaluate("() => document.activeElement?.getAttribute('data-kb')")
        if marker is not None:
            reached.add(int(marker))
    return [controls[i] for i in range(len(controls)) if i not in reached]


async def test_every_control_is_reachable_by_keyboard(
    site: str, page: Page, engine: AsyncEngine
) -> None:
    assert await keyboard_misses(page, f"{site}/ui/sign-in") == []
    await sign_in(page, site)
    for url in await dashboard_pages(page, site, engine):
        assert await keyboard_misses(page, url) == [], url
