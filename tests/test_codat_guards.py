"""What Codat does not document (issue 15): each behaviour degrades instead of failing,
against a fake Codat taught to behave so. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.queries import get_company, get_rate_limit
from app.codat.client import CodatClient
from app.codat.gate import PauseGate
from app.db import session_factory
from app.models import DataTypeState, Job, RateLimitState, Record, WriteOutcome
from app.processing.context import Context
from app.processing.reconcile import request_reconcile
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat
from tests.conftest import API_KEY, Clock, sample
from tests.support.flow import (
    COMPANY,
    CONNECTION,
    codat_id,
    deliver,
    local_records,
    one,
    read_event,
    seed_company,
)

QUEUE = "/data/queue/"


def write_success() -> dict[str, Any]:
    body = copy.deepcopy(sample("bills.write.successful"))
    body["id"] = str(uuid.uuid4())
    body["payload"]["id"] = str(uuid.uuid4())
    body["payload"]["referenceCompany"]["id"] = COMPANY
    body["payload"]["connectionId"] = CONNECTION
    return body


# -- "already syncing" -------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 409])
async def test_a_refresh_refused_as_already_syncing_is_done_whatever_the_status(
    status: int,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.already_in_progress_status = status
    for _ in range(2):
        await deliver(client, write_success())
        await Worker(ctx).run_until_idle()
        clock.advance(ctx.settings.refresh_debounce_seconds + 1)
        await Worker(ctx).run_until_idle()
    queued = [c.status for c in fake_codat.calls_to(QUEUE) if c.method == "POST"]
    assert queued == [200, status]
    job = await one(engine, Job, Job.kind == "refresh")
    assert (job.status, job.attempts, job.last_error) == ("done", 1, None), "not a failure"


async def test_any_other_400_on_a_refresh_stays_a_visible_failure(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.fail_next(QUEUE, 400)
    async with ctx.sessions.begin() as session:
        from app.processing.refreshes import request_refresh

        await request_refresh(
            session, COMPANY, "bills", connection_id=CONNECTION, now=ctx.clock(), reason="api"
        )
    await Worker(ctx).run_until_idle()
    job = await one(engine, Job, Job.kind == "refresh")
    assert job.status == "dead" and "400" in (job.last_error or "")


# -- the push operation list ----------------------------------------------------------------


async def test_the_push_list_falls_back_when_codat_refuses_its_query(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.refuse_push_query = True
    recent, failed, old = codat_id("push", 1), codat_id("push", 2), codat_id("push", 3)
    lookback = ctx.settings.reconcile_push_lookback
    fake_codat.add_push_operation(
        COMPANY,
        key=old,
        data_type="bills",
        status="Success",
        requested=clock.now - lookback - timedelta(days=1),
        record_id="bill-old",
    )
    for i in range(5):  # more than a page (2) of recent operations
        fake_codat.add_push_operation(
            COMPANY,
            key=codat_id("push", 10 + i),
            data_type="bills",
            status="Pending",
            requested=clock.now - timedelta(hours=5 - i),
        )
    fake_codat.add_push_operation(
        COMPANY,
        key=recent,
        data_type="bills",
        status="Success",
        requested=clock.now - timedelta(hours=2),
        record_id="bill-42",
    )
    fake_codat.add_push_operation(
        COMPANY,
        key=failed,
        data_type="bills",
        status="Failed",
        requested=clock.now - timedelta(hours=1),
        error_message="Supplier is archived",
    )
    async with ctx.sessions.begin() as session:
        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()

    job = await one(engine, Job, Job.kind == "reconcile")
    assert (job.status, job.last_error) == ("done", None), "never dead for it"
    async with engine.connect() as connection:
        rows = (await connection.execute(select(WriteOutcome))).all()
    outcomes = {row.push_operation_key: WriteOutcome(**row._mapping) for row in rows}
    assert set(outcomes) == {recent, failed}, "caught up within the look-back, and no older"
    assert outcomes[failed].error_message == "Supplier is archived"
    lists = [
        c for c in fake_codat.calls_to(f"/companies/{COMPANY}/push") if c.path.endswith("/push")
    ]
    assert [c.status for c in lists][:2] == [400, 200]
    assert "query" in lists[0].query and "query" not in lists[1].query
    assert lists[1].query["orderBy"] == "-requestedOnUtc", "newest first"
    assert all(c.query.get("page") in ("1", "2", "3", "4") for c in lists[1:])
    assert len(lists) <= 5, "paging stopped at the look-back"


# -- paging guards ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["repeat", "other_company", "other_data_type"])
async def test_a_next_link_that_does_not_lead_on_ends_the_pull_with_an_error(
    fault: str,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=5)  # three pages of two
    fake_codat.next_link_fault = fault  # type: ignore[assignment]
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()

    bill_calls = [c for c in fake_codat.calls if "/data/" in c.path]
    assert [c.path for c in bill_calls] == [f"/companies/{COMPANY}/data/bills"], "one page only"
    assert len(await local_records(engine, "bills")) == 2, "the page already read is kept"
    async with engine.connect() as connection:
        companies = set((await connection.execute(select(Record.company_id))).scalars())
    assert companies == {COMPANY}, "nothing stored under another company"
    job = await one(engine, Job, Job.kind == "pull")
    assert (job.status, job.attempts) == ("done", 1), "stopped, not looping or retried"
    async with session_factory(engine)() as session:
        detail = await get_company(session, COMPANY, now=clock.now, max_age=timedelta(days=1))
    [bills] = detail.data_types
    assert bills.last_pull_error and "next page link" in bills.last_pull_error
    assert bills.last_pulled_at is None, "not counted as a pull that ended well"

    fake_codat.next_link_fault = None
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    assert len(await local_records(engine, "bills")) == 5
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.last_pull_error is None, "cleared by a pull that ends well"


async def test_a_pull_never_asks_for_more_pages_than_total_results_implies(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=5)
    fake_codat.next_link_fault = "endless"
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    assert len(fake_codat.calls_to("/data/bills")) == 3, "5 results, 2 a page"
    assert len(await local_records(engine, "bills")) == 5
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.last_pull_error is None and state.last_pulled_at is not None


# -- the API key and Codat's quota headers ----------------------------------------------------


async def test_an_api_key_given_as_basic_is_used_as_it_is(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    encoded = "Basic " + base64.b64encode(API_KEY.encode()).decode()
    codat = CodatClient(
        api_key=encoded,
        base_url=str(ctx.codat._http.base_url),
        gate=PauseGate(clock),
        clock=clock,
        page_size=2,
        retry_base_delay=0.001,
    )
    portal_ctx = Context(sessions=ctx.sessions, codat=codat, settings=ctx.settings, clock=clock)
    try:
        await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
        await Worker(portal_ctx).run_until_idle()
    finally:
        await codat.aclose()
    assert len(await local_records(engine, "bills")) == 2
    assert {c.headers["authorization"] for c in fake_codat.calls} == {encoded}
    assert {c.status for c in fake_codat.calls} == {200}


async def test_codats_rate_limit_headers_become_the_quota_shown(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=1)
    fake_codat.daily_quota = 4321
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    await Worker(ctx).run_until_idle()  # the next claim stores what the calls said
    used = len(fake_codat.calls)
    state = await one(engine, RateLimitState)
    assert (state.daily_quota, state.quota_remaining) == (4321, 4321 - used)
    midnight = datetime.combine(clock.now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert state.quota_reset_at == midnight
    async with session_factory(engine)() as session:
        shown = await get_rate_limit(session, clock.now)
    assert (shown.daily_quota, shown.quota_remaining) == (4321, 4321 - used)
    assert shown.quota_read_at is not None and not shown.paused
