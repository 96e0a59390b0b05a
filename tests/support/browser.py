"""Driving the dashboard in a real browser: the service served on loopback with its
embedded worker and the fake Codat, Debian's Chromium through Playwright, and a scene of
companies, events and writes made the way Codat makes them (signed deliveries).

The browser tests and `python -m tests.support.screenshots` share it."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from playwright.async_api import Browser, Page, Playwright
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.config import Settings
from app.main import create_app
from app.models import EventStatus, WebhookEvent
from app.sandbox.fake_codat import FakeCodat
from tests.conftest import API_KEY, make_settings, sample
from tests.support.flow import COMPANY, CONNECTION, codat_id, deliver, read_event, seed_company
from tests.support.ports import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
TOKEN = "dashboard-browser-token"
OTHER_COMPANY = codat_id("company", 2)
OTHER_CONNECTION = codat_id("connection", 2)
FAILED_PUSH = "d4e5f6a7-b8c9-4dab-8cde-f0123456789a"  # the sample's push operation key


async def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium (scripts/ensure-test-tools.sh installs it), headless."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def served_settings(database_url: str, codat_base_url: str) -> Settings:
    """The service as `make run` runs it, with its worker inside, against the fake Codat."""
    return make_settings(
        database_url,
        status_api_tokens=TOKEN,
        embedded_worker=True,
        codat_api_key=API_KEY,
        codat_base_url=codat_base_url,
        worker_poll_interval=0.05,
        worker_retry_base_seconds=1,
        worker_retry_max_seconds=2,
        pull_debounce_seconds=0,
        refresh_debounce_seconds=0,
    )


@asynccontextmanager
async def serve(settings: Settings, engine: AsyncEngine) -> AsyncIterator[str]:
    """The app on a loopback port, in this event loop; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, engine=engine),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def sign_in(page: Page, base_url: str, token: str = TOKEN) -> None:
    await page.goto(f"{base_url}/ui")
    await page.get_by_label("Status API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Overview").wait_for()


async def until(check: Any, within: float = 10.0) -> None:
    """Until the coroutine function `check` answers true."""
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{check.__name__} not true within {within} s")


async def statuses(engine: AsyncEngine) -> dict[int, str]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(WebhookEvent.id, WebhookEvent.status))).all()
    return {event_id: status for event_id, status in rows}


async def settled(engine: AsyncEngine) -> bool:
    """Every event finished one way or another (the worker has nothing left)."""
    waiting = {EventStatus.PENDING, EventStatus.PROCESSING}
    return not waiting & set((await statuses(engine)).values())


def _other_company_read(status: str) -> dict[str, Any]:
    body = read_event("read.completed.initial", [("bills", "Complete", True)])
    body["payload"]["referenceCompany"]["id"] = OTHER_COMPANY
    body["payload"]["referenceCompany"]["name"] = "Northwind Traders"
    body["payload"]["referenceCompany"]["tags"] = {"customerId": "cus_8841", "region": "uk"}
    for item in body["payload"]["dataTypes"]:
        item["connectionId"] = OTHER_CONNECTION
    body["payload"]["dataTypes"].append(
        {
            "connectionId": OTHER_CONNECTION,
            "dataType": "suppliers",
            "status": status,
            "recordsModified": False,
            "issues": [
                {
                    "type": "error.fetch",
                    "message": "The accounting software did not answer in time.",
                    "links": {
                        "portal": f"https://app.codat.io/companies/{OTHER_COMPANY}/pull-history"
                    },
                }
            ],
        }
    )
    return body


async def make_scene(base_url: str, engine: AsyncEngine, fake: FakeCodat, *, dead: int = 3) -> None:
    """Two companies (one ready, one whose suppliers failed to read), reads and a failed
    write delivered signed and processed by the worker, then `dead` read.completed events
    left dead as if their retries had run out."""
    seed_company(fake)
    for data_type in BILL_PAY_DATA_TYPES["async"]:
        fake.complete_sync(COMPANY, data_type)
    fake.add_company(OTHER_COMPANY, OTHER_CONNECTION, name="Northwind Traders")
    fake.complete_sync(OTHER_COMPANY, "bills")
    fake.add_push_operation(
        COMPANY,
        key=FAILED_PUSH,
        data_type="bills",
        status="Failed",
        requested=fake.now() - timedelta(minutes=5),
        error_message="Supplier not found in the accounting software",
        validation_errors=[{"itemId": "bill-9", "message": "Supplier 'sup-9' is archived"}],
        connection_id=CONNECTION,
    )
    initial = read_event(
        "read.completed.initial", [(t, "Complete", True) for t in BILL_PAY_DATA_TYPES["async"]]
    )
    initial["payload"]["referenceCompany"]["tags"] = {"customerId": "cus_123"}
    bodies = [initial, _other_company_read("FetchError")]
    write = copy.deepcopy(sample("bills.write.unsuccessful"))
    write["id"] = str(uuid.uuid4())
    bodies.append(write)
    bodies += [read_event("read.completed", [("bills", "Complete", True)]) for _ in range(dead)]
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for body in bodies:
            await deliver(client, body)

    async def done() -> bool:
        return await settled(engine)

    await until(done, within=30)
    if dead:
        async with engine.begin() as connection:
            last = sorted(await statuses(engine))[-dead:]
            await connection.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id.in_(last))
                .values(status=EventStatus.DEAD, attempts=10, last_error="CodatError: HTTP 503")
            )
