"""The dashboard over HTTP, on both databases: nothing without a session, the cookie's
terms, CSRF on every action, and pages that show what the status API would answer.
(The browser tests, tests/test_dashboard_browser.py, drive the same pages in Chromium.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.dashboard import reads
from app.dashboard.auth import SignInRequired, new_session_cookie, read_session, safe_next
from app.dashboard.routes import router
from app.db import session_factory
from app.main import create_app, create_split_apps
from app.models import (
    Company,
    DataTypeState,
    EventStatus,
    Job,
    RateLimitState,
    WebhookEvent,
    WriteOutcome,
    utcnow,
)
from tests.conftest import make_settings, running
from tests.support.flow import COMPANY

TOKEN = "dashboard-token-for-tests"
# Routes anyone may reach: the sign-in form and its post, and the stylesheet.
PUBLIC = {("GET", "/ui/sign-in"), ("POST", "/ui/sign-in"), ("GET", "/ui/assets/dashboard.css")}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=f"other-token,{TOKEN}")


def dashboard_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the dashboard's router, which is all there is under /ui."""
    return sorted(
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/ui/sign-in")
    return await client.post(
        "/ui/sign-in",
        data={"csrf": csrf_of(form.text), "token": token, "next": "/ui/events"},
    )


async def add_event(engine: AsyncEngine, status: str, **values: Any) -> int:
    now = utcnow()
    async with session_factory(engine)() as session:
        event = WebhookEvent(
            delivery_id=values.pop("delivery_id", f"msg_{status}_{now.timestamp()}"),
            event_type=values.pop("event_type", "read.completed"),
            company_id=values.pop("company_id", COMPANY),
            received_at=values.pop("received_at", now),
            raw_body=b'{"id":"e","eventType":"read.completed","payload":{"x":1}}',
            status=status,
            attempts=values.pop("attempts", 1),
            **values,
        )
        session.add(event)
        await session.commit()
        return event.id


async def test_no_page_or_action_is_reachable_without_the_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    routes = dashboard_routes()
    guarded = [route for route in routes if route not in PUBLIC]
    assert len(guarded) >= 12, routes
    event_id = await add_event(engine, EventStatus.DEAD)
    await seed_companies(engine)
    await pause(engine)
    forged = new_session_cookie(b"not-a-configured-token", utcnow(), timedelta(hours=1))
    for cookies in ({}, {"dashboard_session": forged}, {"dashboard_session": "v1.9.x.y"}):
        client.cookies.clear()
        for cookie, value in cookies.items():
            client.cookies.set(cookie, value, path="/ui")
        for method, path in guarded:
            url = path.replace("{event_id:int}", str(event_id))
            url = url.replace("{company_id}", "c-ready")
            response = await client.request(method, url, data={"csrf": "x", "status": "dead"})
            assert response.status_code == 401, (method, url, cookies)
            assert "Sign in" in response.text and 'name="token"' in response.text
    async with session_factory(engine)() as session:
        event = await session.get(WebhookEvent, event_id)
        assert event is not None and event.status == EventStatus.DEAD
        assert (await session.scalars(select(Job))).all() == []
        state = await session.get(RateLimitState, 1)
        assert state is not None and state.paused_until is not None


async def pause(engine: AsyncEngine) -> None:
    """Calls to Codat paused for three hours, the quota spent."""
    now = utcnow()
    async with session_factory(engine)() as session:
        session.add(
            RateLimitState(
                id=1,
                paused_until=now + timedelta(hours=3),
                reason="rateLimit.reached",
                event_at=now,
                updated_at=now,
                daily_quota=1000,
                quota_remaining=0,
            )
        )
        await session.commit()


async def test_the_session_is_refused_before_a_big_body_is_read(
    client: httpx.AsyncClient,
) -> None:
    async def endless() -> Any:
        for _ in range(10_000):
            yield b"x" * 65536

    response = await client.post("/ui/events/replay", content=endless())
    assert response.status_code == 401


async def test_signing_in_gives_a_strict_http_only_cookie_that_expires(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    refused = await sign_in(client, token="wrong")
    assert refused.status_code == 401
    assert "not one of the status API tokens" in refused.text
    assert "dashboard_session" not in refused.headers.get("set-cookie", "")

    signed = await sign_in(client)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ui/events"
    cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("dashboard_session=")
    )
    terms = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path", "samesite"} <= terms
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    assert f"max-age={settings.dashboard_session_minutes * 60}" in cookie.lower()
    assert TOKEN not in cookie
    page = await client.get("/ui/events")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


async def test_sign_in_needs_its_own_csrf_token(client: httpx.AsyncClient) -> None:
    await client.get("/ui/sign-in")
    forged = await client.post("/ui/sign-in", data={"csrf": "guessed", "token": TOKEN})
    assert forged.status_code == 403
    assert "dashboard_session" not in forged.headers.get("set-cookie", "")


def test_a_session_cookie_ends_at_its_expiry_and_with_its_token() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    cookie = new_session_cookie(TOKEN.encode(), now, timedelta(minutes=30))
    assert read_session(cookie, [b"other", TOKEN.encode()], now + timedelta(minutes=29)).csrf
    with pytest.raises(SignInRequired):
        read_session(cookie, [TOKEN.encode()], now + timedelta(minutes=30))
    with pytest.raises(SignInRequired):  # the token was taken out of STATUS_API_TOKENS
        read_session(cookie, [b"other"], now)
    tampered = cookie.replace(cookie.split(".")[1], str(int(now.timestamp()) + 999_999))
    with pytest.raises(SignInRequired):
        read_session(tampered, [TOKEN.encode()], now)


def test_after_signing_in_it_goes_only_to_a_dashboard_page() -> None:
    assert safe_next("/ui/events?status=dead") == "/ui/events?status=dead"
    for hostile in ("https://evil.example/ui/", "//evil.example", "/ui\\@evil", "/api/v1", None):
        assert safe_next(hostile) == "/ui"


async def test_every_action_needs_the_csrf_token_of_the_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event_id = await add_event(engine, EventStatus.DEAD)
    await sign_in(client)
    detail = await client.get(f"/ui/events/{event_id}")
    for csrf in (None, "", "another-sessions-token"):
        data = {} if csrf is None else {"csrf": csrf}
        refused = await client.post(f"/ui/events/{event_id}/replay", data=data)
        assert refused.status_code == 403
    async with session_factory(engine)() as session:
        assert (await session.get(WebhookEvent, event_id)).status == EventStatus.DEAD  # type: ignore[union-attr]

    replayed = await client.post(
        f"/ui/events/{event_id}/replay", data={"csrf": csrf_of(detail.text)}
    )
    assert replayed.status_code == 303
    async with session_factory(engine)() as session:
        assert (await session.get(WebhookEvent, event_id)).status == EventStatus.PENDING  # type: ignore[union-attr]


async def test_a_form_over_the_cap_is_refused(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = await client.get("/ui/events/replay?status=dead")
    response = await client.post(
        "/ui/events/replay", data={"csrf": csrf_of(page.text), "event_type": "x" * 9000}
    )
    assert response.status_code == 413


async def test_a_pause_is_lifted_from_the_overview_with_the_command(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await pause(engine)
    await sign_in(client)
    overview = await client.get("/ui")
    assert "Paused until" in overview.text and "0 of 1000 a day" in overview.text
    refused = await client.post("/ui/rate-limit/resume", data={})
    assert refused.status_code == 403
    async with session_factory(engine)() as session:
        assert (await session.get(RateLimitState, 1)).paused_until is not None  # type: ignore[union-attr]
    lifted = await client.post("/ui/rate-limit/resume", data={"csrf": csrf_of(overview.text)})
    assert lifted.headers["location"] == "/ui?resumed=lifted"
    after = (await client.get(lifted.headers["location"])).text
    assert "The pause is lifted" in after and "Calls to Codat are not paused" in after
    async with session_factory(engine)() as session:
        state = await session.get(RateLimitState, 1)
        assert state is not None and state.paused_until is None
    again = await client.post("/ui/rate-limit/resume", data={"csrf": csrf_of(after)})
    assert again.headers["location"] == "/ui?resumed=none"


async def test_signing_out_ends_the_session(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    overview = await client.get("/ui")
    assert overview.status_code == 200
    out = await client.post("/ui/sign-out", data={"csrf": csrf_of(overview.text)})
    assert out.status_code == 303
    assert (await client.get("/ui")).status_code == 401


async def test_the_dashboard_is_on_the_internal_listener_only(
    settings: Settings, engine: AsyncEngine
) -> None:
    public, internal = create_split_apps(settings, engine=engine)
    single = create_app(settings, engine=engine)
    for app, sign_in_status, page_status in (
        (public, 404, 404),
        (internal, 200, 401),
        (single, 200, 401),
    ):
        async with running(app) as client:
            assert (await client.get("/ui/sign-in")).status_code == sign_in_status
            assert (await client.get("/ui")).status_code == page_status


async def test_bulk_replay_shows_the_count_first_then_replays_that_filter(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    dead = [await add_event(engine, EventStatus.DEAD) for _ in range(3)]
    other = await add_event(engine, EventStatus.DEAD, event_type="bills.write.successful")
    done = await add_event(engine, EventStatus.PROCESSED)
    await sign_in(client)
    nothing = await client.get("/ui/events/replay")
    assert "at least one filter" in nothing.text
    preview = await client.get("/ui/events/replay?status=dead&event_type=read.completed")
    assert "3 event(s) would be queued again" in preview.text
    async with session_factory(engine)() as session:
        assert {e.status for e in await session.scalars(select(WebhookEvent))} == {
            EventStatus.DEAD,
            EventStatus.PROCESSED,
        }
    replayed = await client.post(
        "/ui/events/replay",
        data={
            "csrf": csrf_of(preview.text),
            "status": "dead",
            "event_type": "read.completed",
            "company_id": "",
        },
    )
    assert replayed.status_code == 303
    listed = await client.get(replayed.headers["location"])
    assert "Queued 3 event(s) again" in listed.text
    async with session_factory(engine)() as session:
        statuses = {e.id: e.status for e in await session.scalars(select(WebhookEvent))}
    assert statuses == {
        **dict.fromkeys(dead, EventStatus.PENDING),
        other: EventStatus.DEAD,
        done: EventStatus.PROCESSED,
    }


async def test_the_events_page_filters_and_searches_by_delivery_id(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await add_event(engine, EventStatus.PROCESSED, delivery_id="msg_alpha")
    await add_event(engine, EventStatus.DEAD, delivery_id="msg_beta", last_error="boom")
    await add_event(
        engine,
        EventStatus.PROCESSED,
        delivery_id="msg_old",
        received_at=utcnow() - timedelta(days=3),
    )
    await sign_in(client)
    rows = re.compile(r'href="/ui/events/(\d+)"')
    every = await client.get("/ui/events")
    assert len(rows.findall(every.text)) == 3
    dead = await client.get("/ui/events", params={"status": "dead"})
    assert len(rows.findall(dead.text)) == 1 and "boom" in dead.text
    found = await client.get("/ui/events", params={"delivery_id": "msg_alpha"})
    assert len(rows.findall(found.text)) == 1
    since = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    recent = await client.get("/ui/events", params={"received_after": since})
    assert len(rows.findall(recent.text)) == 2
    wrong = await client.get("/ui/events", params={"status": "nope", "received_after": "soon"})
    assert wrong.status_code == 200
    assert "status: not one of" in wrong.text and "received after: not a date" in wrong.text


async def seed_companies(engine: AsyncEngine) -> None:
    """One ready and fresh, one stale with a failed and a terminal type, one that needs
    re-authorising; and two writes, one failed."""
    now = utcnow()
    old = now - timedelta(days=3)
    async with session_factory(engine)() as session:
        for company_id, status, connection in (
            ("c-ready", "complete", "Linked"),
            ("c-stale", "complete", "Linked"),
            ("c-reauth", "incomplete", "Deauthorized"),
        ):
            session.add(
                Company(
                    id=company_id,
                    name=f"Company {company_id}",
                    connection_id=f"{company_id}-conn",
                    connection_status=connection,
                    initial_read_status=status,
                    needs_reauth=connection == "Deauthorized",
                    reauth_reason="Deauthorized" if connection == "Deauthorized" else None,
                    link_url="https://link.codat.io/x" if connection == "Deauthorized" else None,
                    tags={"customerId": f"cus_{company_id}", "tier": "gold"},
                    created_at=now,
                    updated_at=now,
                )
            )
        for company_id, data_type, status, pulled in (
            ("c-ready", "bills", "Complete", now),
            ("c-stale", "bills", "Complete", old),
            ("c-stale", "suppliers", "FetchError", old),
            ("c-stale", "company", "NotSupported", None),
        ):
            session.add(
                DataTypeState(
                    company_id=company_id,
                    data_type=data_type,
                    last_read_status=status,
                    last_read_at=pulled or old,
                    last_read_issues=[
                        {
                            "type": "error",
                            "message": "it broke",
                            "links": {"portal": "https://app.codat.io/x", "bad": "javascript:1"},
                        }
                    ]
                    if status != "Complete"
                    else [],
                    last_pulled_at=pulled,
                    record_count=4,
                    updated_at=now,
                )
            )
        for key, status, message in (
            ("push-ok", "Success", None),
            ("push-bad", "Failed", "Supplier not found"),
        ):
            session.add(
                WriteOutcome(
                    push_operation_key=key,
                    company_id="c-stale",
                    data_type="bills",
                    write_type="Create",
                    status=status,
                    error_message=message,
                    validation={"errors": [{"itemId": "bill-1", "message": "Supplier is archived"}]}
                    if message
                    else None,
                    updated_at=now if status == "Success" else old,
                )
            )
        await session.commit()


async def test_the_companies_grid_colours_each_type_by_freshness(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed_companies(engine)
    await sign_in(client)
    grid = (await client.get("/ui/companies")).text

    def cell(company: str, column: int) -> str:
        row = grid[grid.index(f"Company {company}") :]
        cells = re.findall(r'<td class="cell (\w+)"', row[: row.index("</tr>")])
        return str(cells[column])

    types = re.findall(r'<th scope="col">(\w+)</th>', grid)[2:]
    assert cell("c-ready", types.index("bills")) == "fresh"
    assert cell("c-stale", types.index("bills")) == "overdue"
    assert cell("c-stale", types.index("suppliers")) == "failed"
    assert cell("c-stale", types.index("company")) == "terminal"
    assert cell("c-ready", types.index("suppliers")) == "unread"
    reauth = (await client.get("/ui/companies", params={"state": "needs_reauth"})).text
    assert "Company c-reauth" in reauth and "Company c-ready" not in reauth
    stale = (await client.get("/ui/companies", params={"state": "stale"})).text
    assert "Company c-stale" in stale and "Company c-ready" not in stale
    tagged = (await client.get("/ui/companies", params={"tag": "customerId:cus_c-ready"})).text
    assert "Company c-ready" in tagged and "Company c-stale" not in tagged
    assert "customerId: cus_c-ready" in tagged
    both = {"tag": "tier:gold", "state": "needs_reauth"}
    assert "Company c-reauth" in (await client.get("/ui/companies", params=both)).text
    wrong = await client.get("/ui/companies", params={"tag": "no colon"})
    assert wrong.status_code == 200 and "is not key:value" in wrong.text
    assert "Company c-ready" in wrong.text, "a wrong filter is dropped, not the page"


async def test_the_overview_counts_companies_queues_and_the_last_day(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed_companies(engine)
    # In the order the receiver stores them: ids grow with the time received.
    await add_event(engine, EventStatus.PROCESSED, received_at=utcnow() - timedelta(days=2))
    await add_event(engine, EventStatus.PENDING, next_attempt_at=utcnow() - timedelta(minutes=5))
    await add_event(engine, EventStatus.PROCESSED)
    await add_event(engine, EventStatus.DEAD)
    async with session_factory(engine)() as session:
        await session.execute(update(DataTypeState).values(catch_ups=2))
        await session.commit()
    await sign_in(client)
    html = (await client.get("/ui")).text
    assert "<svg" in html and 'role="img"' in html
    table = html[html.index("<tbody>") : html.index("</tbody>")]
    totals = [
        list(map(int, row))
        for row in re.findall(r"<td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", table)
    ]
    assert [sum(column) for column in zip(*totals, strict=True)] == [3, 1, 1, 1]
    assert re.search(r">2</span> Ready<", html)  # c-stale is ready, and stale
    assert re.search(r">1</span> Needs re-authorisation<", html)
    assert re.search(r">1</span> Stale data<", html)
    assert re.search(r'<h2 id="missed-h">Missed webhooks</h2>\s*<p class="figure">8</p>', html)
    assert re.search(r"<th scope=\"row\">events</th><td>1</td><td>0</td>", html)


async def test_the_company_page_shows_issues_links_and_writes(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed_companies(engine)
    await sign_in(client)
    page = (await client.get("/ui/companies/c-stale")).text
    assert 'href="https://app.codat.io/x"' in page
    assert "javascript:" not in page
    assert "Supplier not found" in page and "Supplier is archived" in page
    reauth = (await client.get("/ui/companies/c-reauth")).text
    assert "must be linked again" in reauth and 'href="https://link.codat.io/x"' in reauth
    assert "tier: gold" in reauth
    missing = await client.get("/ui/companies/nobody")
    assert missing.status_code == 404 and "no company nobody" in missing.text
    writes = (await client.get("/ui/writes")).text
    failures = writes[writes.index("Failed and timed out") : writes.index("Every write")]
    assert "push-bad" in failures and "push-ok" not in failures


async def test_events_by_hour_puts_each_event_in_its_hour_on_both_databases(
    engine: AsyncEngine,
) -> None:
    """The chart's buckets from a fixed moment: every hour of the last 24, none older,
    ids with gaps (pruned rows) in between, each database's own hour arithmetic."""
    now = datetime(2026, 11, 30, 9, 41, tzinfo=UTC)
    received = [
        (now - timedelta(hours=30), EventStatus.PROCESSED),  # before the window
        (now - timedelta(hours=23, minutes=10), EventStatus.PROCESSED),  # 10:xx yesterday
        (now - timedelta(hours=5), EventStatus.DEAD),  # 04:41
        (now - timedelta(hours=5, minutes=20), EventStatus.PROCESSED),  # 04:21
        (now - timedelta(minutes=40), EventStatus.PENDING),  # 09:01
        (now - timedelta(minutes=1), EventStatus.IGNORED),  # 09:40
    ]
    ids = []
    for moment, status in sorted(received):
        ids.append(await add_event(engine, status, received_at=moment))
        await add_event(
            engine, EventStatus.PROCESSED, received_at=moment, delivery_id=f"gap{moment}"
        )
    async with session_factory(engine)() as session:
        await session.execute(delete(WebhookEvent).where(WebhookEvent.id.not_in(ids)))
        await session.commit()
        hours = await reads.events_by_hour(session, now)
    assert len(hours) == 24
    assert hours[0].start == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert hours[-1].start == datetime(2026, 11, 30, 9, tzinfo=UTC)
    found = {
        h.start.hour: (h.received, h.processed, h.dead, h.waiting) for h in hours if h.received
    }
    assert found == {10: (1, 1, 0, 0), 4: (2, 1, 1, 0), 9: (2, 1, 0, 1)}


async def test_a_nul_in_a_dashboard_url_is_a_400_on_either_database(
    client: httpx.AsyncClient,
) -> None:
    """PostgreSQL refuses NUL in any text: the guard refuses it before a page queries with
    it, as it does for the API (otherwise a 500 on PostgreSQL and a page on SQLite)."""
    await sign_in(client)
    for url in ("/ui/events?company_id=%00", "/ui/companies/%00", "/ui/events?delivery_id=a%00"):
        response = await client.get(url)
        assert response.status_code == 400, (url, response.status_code)
    assert (await client.get("/ui/events?company_id=c-ready")).status_code == 200
