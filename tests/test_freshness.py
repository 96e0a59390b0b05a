"""Keeping the copy fresh on purpose: refresh after writes, retries of failed reads, the
budgeted sweep, and reconcile catching up webhooks that never came. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.models import Company, DataTypeState, Job, RateLimitState, WriteOutcome
from app.processing.context import Context
from app.processing.queue import enqueue_job
from app.processing.sweep import SWEEP, SWEEP_KEY
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat, make_bill
from tests.conftest import Clock, make_context, sample
from tests.support.flow import (
    COMPANY,
    CONNECTION,
    assert_local_copy_equals_fake,
    codat_id,
    deliver,
    one,
    read_event,
    seed_company,
)

QUEUE = "/data/queue/"
BILL_PAY_TYPES = len(BILL_PAY_DATA_TYPES["async"])


def write_success(i: int = 0, *, data_type: str = "bills") -> dict[str, Any]:
    body = copy.deepcopy(sample("bills.write.successful"))
    body["id"] = str(uuid.uuid4())
    body["eventType"] = f"{data_type}.write.successful"
    body["payload"]["id"] = str(uuid.uuid4())
    body["payload"]["referenceCompany"]["id"] = COMPANY
    body["payload"]["connectionId"] = CONNECTION
    return body


def queue_calls(fake: FakeCodat) -> list[Any]:
    return [c for c in fake.calls_to(QUEUE) if c.method == "POST"]


async def test_a_successful_write_queues_one_refresh_with_its_connection(
    client: httpx.AsyncClient, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    await deliver(client, write_success())
    await Worker(ctx).run_until_idle()
    assert queue_calls(fake_codat) == [], "debounced"
    clock.advance(31)
    await Worker(ctx).run_until_idle()
    [call] = queue_calls(fake_codat)
    assert call.path == f"/companies/{COMPANY}/data/queue/bills"
    assert call.query == {"connectionId": CONNECTION}


async def test_a_burst_of_twenty_writes_makes_one_refresh(
    client: httpx.AsyncClient, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    for i in range(20):
        await deliver(client, write_success(i))
        await Worker(ctx).run_until_idle()
        clock.advance(1)
    clock.advance(30)
    await Worker(ctx).run_until_idle()
    assert len(queue_calls(fake_codat)) == 1


async def test_already_in_progress_counts_as_done(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    for _ in range(2):
        await deliver(client, write_success())
        await Worker(ctx).run_until_idle()
        clock.advance(31)
        await Worker(ctx).run_until_idle()
    assert [c.status for c in queue_calls(fake_codat)] == [200, 409]
    job = await one(engine, Job, Job.kind == "refresh")
    assert (job.status, job.attempts, job.last_error) == ("done", 1, None), "not a failure"


async def test_failed_bill_pay_reads_are_refreshed_a_few_times_with_growing_gaps(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    gaps = []
    for attempt in range(4):
        kind = "read.completed.initial" if attempt == 0 else "read.completed"
        await deliver(client, read_event(kind, [("paymentMethods", "FetchError", False)]))
        await Worker(ctx).run_until_idle()
        before = len(queue_calls(fake_codat))
        waited = 0
        while len(queue_calls(fake_codat)) == before and waited < 10_000:
            clock.advance(60)
            waited += 60
            await Worker(ctx).run_until_idle()
        gaps.append(waited)
        fake_codat.fail_pull(COMPANY, "paymentMethods") if fake_codat.queued_pulls else None
    assert gaps[:3] == sorted(gaps[:3]) and gaps[0] < gaps[2], gaps
    assert gaps[3] >= 10_000, "no fourth refresh: REFRESH_MAX_RETRIES is 3"
    state = await one(engine, DataTypeState, DataTypeState.data_type == "paymentMethods")
    assert state.refresh_retries == 3


async def test_reconcile_catches_up_a_missed_read_completed(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=3)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    clock.advance(3600)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-missed"))
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-1", amount=5.0))
    fake_codat.complete_sync(COMPANY, "bills")  # ...and its webhook never arrives

    async with ctx.sessions.begin() as session:
        from app.processing.reconcile import request_reconcile

        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.catch_ups == 1
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.last_reconciled_at is not None

    # Nothing new since: a second pass catches up nothing.
    async with ctx.sessions.begin() as session:
        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()
    assert (await one(engine, DataTypeState, DataTypeState.data_type == "bills")).catch_ups == 1
    push_lists = [c for c in fake_codat.calls if c.path == f"/companies/{COMPANY}/push"]
    assert len(push_lists) == 1, "push operations are listed once a RECONCILE_PUSH_INTERVAL"


async def test_a_reconcile_whose_push_listing_fails_counts_its_catch_ups_once(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    clock: Clock,
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(worker_max_attempts=3)
    seed_company(fake_codat, bills=1)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    clock.advance(3600)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-missed"))
    fake_codat.complete_sync(COMPANY, "bills")  # ...and its webhook never arrives
    # Codat keeps failing the bills' pull and the push operations' listing for a while.
    fake_codat.fail_next("/data/bills", 503, times=100)
    fake_codat.fail_next(f"/companies/{COMPANY}/push", 503, times=100)

    async with ctx.sessions.begin() as session:
        from app.processing.reconcile import request_reconcile

        await request_reconcile(session, COMPANY, clock.now)
    for _ in range(4):
        await Worker(ctx).run_until_idle()
        clock.advance(600)
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.catch_ups == 1, "one missed webhook, counted once"
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.last_reconciled_at is not None
    assert company.last_push_reconciled_at is None, "the listing is still due"
    job = await one(engine, Job, Job.kind == "reconcile")
    assert (job.status, job.last_error) == ("done", None), "finished, not retried"


async def test_a_push_operation_data_type_too_long_to_store_is_cut_alike_on_both_databases(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    key = codat_id("push", 3)
    fake_codat.add_push_operation(
        COMPANY,
        key=key,
        data_type="bills",
        status="Success",
        requested=clock.now - timedelta(hours=1),
    )
    # The fake refuses a data type Codat does not have; Codat's own answer is not checked.
    with fake_codat._lock:
        fake_codat._company(COMPANY).push_operations[key]["dataType"] = "x" * 100
    async with ctx.sessions.begin() as session:
        from app.processing.reconcile import request_reconcile

        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()
    outcome = await one(engine, WriteOutcome, WriteOutcome.push_operation_key == key)
    assert (outcome.data_type, outcome.status) == ("x" * 64, "Success")
    assert (await one(engine, Job, Job.kind == "reconcile")).status == "done"


async def test_a_missed_write_whose_detail_fails_does_not_stop_the_others(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    broken, good = codat_id("push", 4), codat_id("push", 5)
    for key, minutes in ((broken, 20), (good, 10)):
        fake_codat.add_push_operation(
            COMPANY,
            key=key,
            data_type="bills",
            status="Failed",
            requested=clock.now - timedelta(minutes=minutes),
            error_message="Tax rate not found",
        )
    fake_codat.fail_next(f"/push/{broken}", 400)  # its detail is refused
    async with ctx.sessions.begin() as session:
        from app.processing.reconcile import request_reconcile

        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()
    async with engine.connect() as connection:
        keys = (await connection.execute(select(WriteOutcome.push_operation_key))).scalars().all()
    assert list(keys) == [good]
    company = await one(engine, Company, Company.id == COMPANY)
    assert (company.write_catch_ups, company.last_push_reconciled_at) == (1, None)


MISSED = codat_id("push", 1)


async def test_reconcile_finds_a_missed_failed_write_and_its_errors(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.add_push_operation(
        COMPANY,
        key=MISSED,
        data_type="bills",
        status="Failed",
        requested=clock.now - timedelta(hours=1),
        error_message="Tax rate not found",
        validation_errors=[{"itemId": "TaxRateRef", "message": "unknown", "validatorName": "Bill"}],
    )
    fake_codat.add_push_operation(
        COMPANY,
        key=codat_id("push", 2),
        data_type="bills",
        status="Pending",
        requested=clock.now - timedelta(minutes=1),
    )
    async with ctx.sessions.begin() as session:
        from app.processing.reconcile import request_reconcile

        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()
    outcome = await one(engine, WriteOutcome, WriteOutcome.push_operation_key == MISSED)
    assert (outcome.status, outcome.source) == ("Failed", "reconcile")
    assert outcome.error_message == "Tax rate not found"
    assert outcome.validation["errors"][0]["itemId"] == "TaxRateRef"
    assert fake_codat.calls_to(f"/push/{MISSED}"), "the failure's detail was fetched"
    async with engine.connect() as connection:
        keys = (await connection.execute(select(WriteOutcome.push_operation_key))).scalars().all()
    assert list(keys) == [MISSED], "a pending operation may still get its webhook"
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.write_catch_ups == 1


async def stale_companies(
    ctx: Context, fake: FakeCodat, clock: Clock, count: int
) -> set[tuple[str, str]]:
    """Companies whose Bill Pay types (of the context's variant) were last pulled two
    days ago."""
    from app.processing.state import ensure_company

    old = clock.now - timedelta(days=2)
    overdue = set()
    async with ctx.sessions.begin() as session:
        for i in range(count):
            company_id, connection_id = codat_id("company", i), codat_id("connection", i)
            fake.add_company(company_id, connection_id)
            await ensure_company(session, company_id, old)
            for data_type in BILL_PAY_DATA_TYPES[ctx.settings.bill_pay_variant]:
                session.add(
                    DataTypeState(
                        company_id=company_id,
                        data_type=data_type,
                        connection_id=connection_id,
                        record_count=0,
                        last_pulled_at=old,
                        last_read_at=old,
                        updated_at=old,
                    )
                )
                overdue.add((company_id, data_type))
            await session.flush()
            company = await session.get(Company, company_id)
            assert company is not None
            company.last_reconciled_at = clock.now + timedelta(days=7)  # not what this tests
        await enqueue_job(session, kind=SWEEP, key=SWEEP_KEY, now=clock.now)
    return overdue


# The sweep's budget must not depend on the hour the day starts at (it once did: started
# before about 05:00 UTC, the calendar-day budget left a company never refreshed).
DAY_STARTS = ["00:05", "02:30", "11:00", "23:55"]


async def simulate_day(ctx: Context, clock: Clock) -> None:
    for _ in range(24 * 4):  # every 15 minutes for a day
        await Worker(ctx).run_until_idle()
        clock.advance(15 * 60)


def calls_in_any_24_hours(calls: list[Any]) -> int:
    times = sorted(call.time for call in calls)
    return max(
        (sum(1 for t in times if start <= t < start + timedelta(days=1)) for start in times),
        default=0,
    )


@pytest.mark.parametrize("start", DAY_STARTS)
async def test_over_a_simulated_day_the_sweep_stays_within_its_share_and_refreshes_all(
    start: str,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    clock: Clock,
    make_ctx: Callable[..., Context],
) -> None:
    clock.set_time_of_day(start)
    ctx = make_ctx(codat_daily_quota=250, bill_pay_variant="sync")  # 7 types a company
    fake_codat.daily_quota = 250  # what Codat's X-Rate-Limit-Limit says, too
    fake_codat.now = clock
    overdue = await stale_companies(ctx, fake_codat, clock, count=5)  # 35 types, share 50
    await simulate_day(ctx, clock)
    calls = queue_calls(fake_codat)
    refreshed = {(c.path.split("/")[2], c.path.rsplit("/", 1)[1]) for c in calls}
    assert refreshed == overdue
    assert len(calls) == len(overdue), "each overdue type asked for once"
    assert calls_in_any_24_hours(calls) <= 250 * 0.2
    # Each company's data-status read was counted once, with its refreshes: 5 + 35 of 50.
    state = await one(engine, RateLimitState)
    assert sum((state.sweep_spent or {}).values()) == 5 + 35


@pytest.mark.parametrize("start", [DAY_STARTS[0], DAY_STARTS[-1]])
async def test_the_sweep_spreads_a_small_budget_over_the_day(
    start: str, fake_codat: FakeCodat, clock: Clock, make_ctx: Callable[..., Context]
) -> None:
    clock.set_time_of_day(start)
    ctx = make_ctx(codat_daily_quota=50, bill_pay_variant="sync")
    fake_codat.daily_quota = 50  # what Codat's X-Rate-Limit-Limit says, too
    fake_codat.now = clock
    await stale_companies(ctx, fake_codat, clock, count=5)  # 35 overdue, a share of 10
    await simulate_day(ctx, clock)
    await simulate_day(ctx, clock)
    calls = queue_calls(fake_codat)
    assert calls, "the sweep made progress"
    # With each company's data-status read, at most the share of 10 in any 24 hours.
    assert calls_in_any_24_hours(calls) <= 10 - 2
    per_day = Counter(call.time.date() for call in calls)
    assert len(per_day) >= 2 and all(n <= 10 for n in per_day.values()), per_day


async def test_two_workers_run_one_sweep(
    engine: AsyncEngine,
    database_url: str,
    fake_codat_server: tuple[Any, str],
    fake_codat: FakeCodat,
    clock: Clock,
    make_ctx: Callable[..., Context],
) -> None:
    from app.db import create_engine

    ctx = make_ctx(codat_daily_quota=100_000)
    fake_codat.daily_quota = 100_000  # what Codat's X-Rate-Limit-Limit says, too
    fake_codat.now = clock
    overdue = await stale_companies(ctx, fake_codat, clock, count=3)
    other_engine = create_engine(database_url)
    other = make_context(other_engine, fake_codat_server[1], clock, codat_daily_quota=100_000)
    try:
        await asyncio.gather(Worker(ctx).run_until_idle(), Worker(other).run_until_idle())
    finally:
        await other.codat.aclose()
        await other_engine.dispose()
    assert len(queue_calls(fake_codat)) == len(overdue)
    state = await one(engine, RateLimitState)
    # Its budget: a data-status read per company and a refresh per type.
    assert sum((state.sweep_spent or {}).values()) == len(overdue) + 3


async def test_no_refresh_while_the_rate_limit_is_reached_and_it_goes_after_reset(
    client: httpx.AsyncClient, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = "2026-05-03T10:00:00Z"
    reached["payload"]["expiryDate"] = (clock.now + timedelta(hours=6)).isoformat()
    await deliver(client, reached)
    await deliver(client, write_success())
    await Worker(ctx).run_until_idle()
    clock.advance(60)
    await Worker(ctx).run_until_idle()
    assert fake_codat.calls == []
    reset = sample("client.rateLimit.reset")
    reset["generatedDate"] = "2026-05-03T11:00:00Z"
    await deliver(client, reset)
    await Worker(ctx).run_until_idle()
    assert len(queue_calls(fake_codat)) == 1


async def test_refresh_and_reconcile_on_demand_through_the_api(
    engine: AsyncEngine, database_url: str, ctx: Context, fake_codat: FakeCodat
) -> None:
    from app.main import create_app
    from tests.conftest import make_settings, running

    settings = make_settings(database_url, status_api_tokens="t")
    auth = {"Authorization": "Bearer t"}
    seed_company(fake_codat, bills=1)
    async with running(create_app(settings, engine=engine)) as client:
        await deliver(client, read_event("read.completed", [("bills", "Complete", False)]))
        await Worker(ctx).run_until_idle()
        url = f"/api/v1/companies/{COMPANY}"
        some = await client.post(f"{url}/refresh", json={"dataTypes": ["bills"]}, headers=auth)
        assert (some.status_code, some.json()) == (
            202,
            {"company_id": COMPANY, "queued": ["bills"]},
        )
        every = await client.post(f"{url}/refresh", headers=auth)
        assert every.status_code == 202 and len(every.json()["queued"]) == BILL_PAY_TYPES
        bad = await client.post(f"{url}/refresh", json={"dataTypes": ["nope"]}, headers=auth)
        assert bad.status_code == 400
        again = await client.post(f"{url}/reconcile", headers=auth)
        assert (again.status_code, again.json()["queued"]) == (202, ["reconcile"])
        assert (await client.post("/api/v1/companies/x/reconcile", headers=auth)).status_code == 404
        await Worker(ctx).run_until_idle()
        assert len(queue_calls(fake_codat)) == BILL_PAY_TYPES, (
            "no call from the API itself, all by the worker"
        )
        detail = (await client.get(url, headers=auth)).json()
        bills = next(d for d in detail["data_types"] if d["data_type"] == "bills")
        assert bills["last_refresh_requested_at"] is not None
        # Codat synced bills after the last read event we saw: reconcile pulled them.
        assert bills["catch_ups"] == 1 and bills["last_pulled_at"] is not None
        assert bills["overdue"] is False
        assert detail["last_reconciled_at"] is not None


async def test_the_sweep_catches_up_a_lost_read_instead_of_hiding_it_with_a_refresh(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    clock.advance(25 * 3600)  # a day later: bills are overdue here...
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-lost"))
    fake_codat.complete_sync(COMPANY, "bills")  # ...Codat read them; the webhook was lost
    async with ctx.sessions.begin() as session:
        await enqueue_job(session, kind=SWEEP, key=SWEEP_KEY, now=clock.now)
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.catch_ups == 1, "counted as a missed webhook"
    refreshed = {c.path.rsplit("/", 1)[1] for c in queue_calls(fake_codat)}
    assert "bills" not in refreshed, "Codat had just read bills: a pull, not a refresh"


async def test_a_sweep_after_a_long_outage_over_many_companies_asks_within_its_pace(
    engine: AsyncEngine, clock: Clock, make_ctx: Callable[..., Context]
) -> None:
    """33,000 companies with data overdue (more than one statement may carry as
    parameters, on either database): the sweep still runs, and sends the stalest
    companies its pace allows to reconcile, each with its overdue type."""
    from sqlalchemy import insert

    from app.processing.sweep import run_sweep

    companies = 33_000
    # A share of 66,000 calls a day: the room holds every company, the pace 688 calls.
    ctx = make_ctx(codat_daily_quota=330_000, bill_pay_variant="sync")
    now = clock()
    ids = [f"company-{i:05d}" for i in range(companies)]
    async with engine.begin() as connection:
        await connection.execute(
            insert(Company),
            [
                {
                    "id": company_id,
                    "status": "active",
                    "last_reconciled_at": now,  # reconciles are not what this tests
                    "created_at": now,
                    "updated_at": now,
                }
                for company_id in ids
            ],
        )
        await connection.execute(
            insert(DataTypeState),
            [
                {
                    "company_id": company_id,
                    "data_type": "bills",
                    # Company i pulled i seconds after the first: the first are stalest.
                    "last_pulled_at": now - timedelta(days=3) + timedelta(seconds=i),
                    "record_count": 0,
                    "updated_at": now,
                }
                for i, company_id in enumerate(ids)
            ],
        )

    await run_sweep(ctx, Job(kind=SWEEP, key=SWEEP_KEY))

    async with engine.connect() as connection:
        queued = (
            await connection.execute(
                select(Job.company_id, Job.params).where(Job.kind == "reconcile")
            )
        ).all()
    pace = -(-330_000 * 0.2 * 15 // (24 * 60))  # 688 calls; a company costs 2
    assert sorted(company_id for company_id, _ in queued) == ids[: int(pace) // 2]
    assert all(params == {"refresh": ["bills"]} for _, params in queued)
