"""The README's pictures of the dashboard, taken in Chromium from the browser tests' scene.

    .venv/bin/python -m tests.support.screenshots [--out docs]

A throw-away SQLite database, the fake Codat on loopback, the service with its worker;
then the overview, the events, one event and the companies grid as PNG files.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from app.db import create_engine
from app.migrate import upgrade
from app.sandbox.fake_codat import FakeCodat, run_fake_codat
from tests.conftest import API_KEY
from tests.support.browser import (
    launch_chromium,
    make_scene,
    serve,
    served_settings,
    sign_in,
    statuses,
)

SHOTS = {
    "dashboard-overview.png": "/ui",
    "dashboard-events.png": "/ui/events",
    "dashboard-event.png": "/ui/events/{first}",
    "dashboard-companies.png": "/ui/companies",
}


async def take(out: Path) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="dashboard-shots-") as tmp:
        url = f"sqlite:///{tmp}/shots.db"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        fake = FakeCodat(api_key=API_KEY)
        written = []
        try:
            with run_fake_codat(fake) as codat_url:
                async with serve(served_settings(url, codat_url), engine) as site:
                    await make_scene(site, engine, fake)
                    first = min(await statuses(engine))
                    async with async_playwright() as playwright:
                        browser = await launch_chromium(playwright)
                        page = await browser.new_page(viewport={"width": 1280, "height": 860})
                        await sign_in(page, site)
                        for name, path in SHOTS.items():
                            await page.goto(site + path.format(first=first))
                            target = out / name
                            await page.screenshot(path=str(target), full_page=False)
                            written.append(target)
                        await browser.close()
        finally:
            await engine.dispose()
        return written


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.screenshots")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    for path in asyncio.run(take(args.out)):
        print(path)


if __name__ == "__main__":
    main()
