"""End to end: signed webhook in, the worker runs, the fake Codat serves pages, and the
local copy and the company's state come out right; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.models import (
    Company,
    DataTypeState,
    EventStatus,
    Job,
    RateLimitState,
    WebhookEvent,
    WriteOutcome,
)
from app.processing.context import Context
from app.processing.queue import enqueue_job
from app.processing.worker import HelperTaskDied, SerialLocks, Worker
from app.sandbox.fake_codat import FakeCodat, make_bill
from tests.conftest import Clock, count_rows, sample
from tests.support.flow import (
    COMPANY,
    CONNECTION,
    assert_local_copy_equals_fake,
    codat_id,
    deliver,
    events,
    local_records,
    one,
    read_event,
    seed_company,
    until_called,
)


async def test_initial_read_records_failures_and_pulls_every_complete_type(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=5)
    await deliver(
        client,
        read_event(
            "read.completed.initial",
            [
                ("bills", "Complete", True),
                ("suppliers", "Complete", False),
                ("company", "Complete", False),
                ("paymentMethods", "FetchError", False),
            ],
        ),
    )
    await Worker(ctx).run_until_idle()

    company = await one(engine, Company, Company.id == COMPANY)
    assert company.initial_read_status == "incomplete"
    failing = {f["dataType"]: f["status"] for f in company.initial_read_failures}
    # Sent but failed, and the Bill Pay types that were not in the event at all.
    assert failing == {
        "paymentMethods": "FetchError",
        "bankAccounts": "Missing",
        "billCreditNotes": "Missing",
        "billPayments": "Missing",
        "chartOfAccounts": "Missing",
        "taxRates": "Missing",
        "trackingCategories": "Missing",
    }
    assert company.name == "Toft stores"
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    await assert_local_copy_equals_fake(engine, fake_codat, "suppliers")
    assert len(fake_codat.calls_to("/data/bills")) == 3, "5 bills in pages of 2"
    state = await one(
        engine,
        DataTypeState,
        DataTypeState.company_id == COMPANY,
        DataTypeState.data_type == "bills",
    )
    assert state.record_count == 5
    assert state.last_pulled_at is not None
    [event] = await events(engine)
    assert event.status == EventStatus.PROCESSED


async def test_complete_initial_read(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=1)
    types = BILL_PAY_DATA_TYPES["async"]
    for data_type in types:
        fake_codat.complete_sync(COMPANY, data_type)
    await deliver(
        client, read_event("read.completed.initial", [(t, "Complete", False) for t in types])
    )
    await Worker(ctx).run_until_idle()
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.initial_read_status == "complete"
    assert company.initial_read_failures == []
    assert await local_records(engine, "company")  # the profile is pulled as one record


async def test_read_completed_pulls_only_what_changed_and_marks_deletions(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=6)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    fake_codat.reset_calls()

    clock.advance(3600)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-2", amount=999.0))
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-new"))
    fake_codat.delete_record(COMPANY, "bills", "bill-4")
    fake_codat.complete_sync(COMPANY, "bills")
    await deliver(
        client,
        read_event(
            "read.completed",
            [("bills", "Complete", True), ("suppliers", "Complete", False)],
            generated="2026-05-04T10:00:00Z",
        ),
    )
    await Worker(ctx).run_until_idle()

    calls = fake_codat.calls_to("/data/bills")
    assert len(calls) == 2, "3 changed records and the one at the watermark, in pages of 2"
    assert calls[0].query["query"].startswith("modifiedDate>=")
    assert not fake_codat.calls_to("/data/suppliers"), "no recordsModified: no pull"
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    local = await local_records(engine, "bills")
    assert local["bill-4"].is_deleted
    assert local["bill-2"].data["totalAmount"] == 999.0
    state = await one(
        engine,
        DataTypeState,
        DataTypeState.company_id == COMPANY,
        DataTypeState.data_type == "bills",
    )
    assert state.record_count == 6, "6 bills + 1 new - 1 deleted"


async def test_waiting_pulls_of_one_company_and_type_collapse_into_one(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    clock: Clock,
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(pull_debounce_seconds=2)
    seed_company(fake_codat, bills=1)
    for _ in range(5):
        await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
        await Worker(ctx).run_until_idle()
    assert fake_codat.calls == [], "the pull waits out the debounce window"
    clock.advance(2)
    await Worker(ctx).run_until_idle()
    await ctx.codat.aclose()
    assert len(fake_codat.calls_to("/data/bills")) == 1
    assert await count_rows(engine, "jobs") == 1
    assert {e.status for e in await events(engine)} == {EventStatus.PROCESSED}


async def test_a_failed_write_keeps_codats_error_and_validation(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    body = sample("bills.write.unsuccessful")
    company_id = body["payload"]["referenceCompany"]["id"]
    key = body["payload"]["id"]
    fake_codat.add_company(company_id, body["payload"]["connectionId"])
    fake_codat.add_push_operation(
        company_id,
        key=key,
        data_type="bills",
        status="Failed",
        requested=ctx.clock(),
        error_message="Push failed for Bill: see validation",
        validation_errors=[
            {"itemId": "SupplierRef", "message": "Supplier not found", "validatorName": "Bill"}
        ],
    )
    await deliver(client, body)
    await Worker(ctx).run_until_idle()
    outcome = await one(engine, WriteOutcome, WriteOutcome.push_operation_key == key)
    assert outcome.status == body["payload"]["status"]
    assert outcome.data_type == "bills"
    assert outcome.error_message == "Push failed for Bill: see validation"
    assert outcome.validation["errors"][0]["message"] == "Supplier not found"
    assert outcome.status_code == 400


@pytest.mark.parametrize("name", ["bill.write.successful", "bills.write.successful"])
async def test_a_successful_write_is_recorded_under_the_plural_data_type(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, name: str
) -> None:
    body = sample(name)
    await deliver(client, body)
    await Worker(ctx).run_until_idle()
    outcome = await one(
        engine, WriteOutcome, WriteOutcome.push_operation_key == body["payload"]["id"]
    )
    assert (outcome.data_type, outcome.status) == ("bills", "Success")
    assert outcome.record_id == body["payload"]["record"]["id"]


async def test_codat_500_then_200_is_retried_and_done(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=3)
    fake_codat.fail_next("/data/bills", 500, times=2)
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    statuses = [call.status for call in fake_codat.calls_to("/data/bills")]
    assert statuses[:2] == [500, 500] and statuses[2:] == [200, 200]


async def test_codat_always_failing_makes_the_job_dead_with_its_error(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    clock: Clock,
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(worker_max_attempts=2)
    seed_company(fake_codat, bills=1)
    fake_codat.fail_next("/data/bills", 503, times=100)
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    clock.advance(10)
    await Worker(ctx).run_until_idle()
    job = await one(engine, Job, Job.kind == "pull")
    assert job.status == "dead"
    assert job.attempts == 2
    assert "CodatUnavailable" in (job.last_error or "")


async def test_a_429_pauses_every_call_until_retry_after(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=3)
    fake_codat.fail_next("/data/bills", 429, retry_after=30)
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    state = await one(engine, RateLimitState)
    assert abs(state.paused_until - (clock.now + timedelta(seconds=30))) < timedelta(seconds=5)
    job = await one(engine, Job, Job.kind == "pull")
    assert (job.status, job.attempts) == ("pending", 0), "waiting is not an attempt"
    calls_during_pause = len(fake_codat.calls)

    clock.advance(20)
    await Worker(ctx).run_until_idle()
    assert len(fake_codat.calls) == calls_during_pause, "no call while paused"

    clock.advance(11)
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")


async def test_rate_limit_reached_then_reset_makes_no_call_in_between(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = "2026-05-03T10:00:00Z"
    reached["payload"]["expiryDate"] = (clock.now + timedelta(hours=6)).isoformat()
    await deliver(client, reached)
    await Worker(ctx).run_until_idle()
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    assert fake_codat.calls == [], "paused: the pull waits"
    job = await one(engine, Job, Job.kind == "pull")
    assert (job.status, job.attempts) == ("pending", 0)

    reset = sample("client.rateLimit.reset")
    reset["generatedDate"] = "2026-05-03T11:00:00Z"
    await deliver(client, reset)
    await Worker(ctx).run_until_idle()  # no clock change: the reset alone lets it go
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")
    state = await one(engine, RateLimitState)
    assert state.paused_until is None
    assert state.quota_remaining == reset["payload"]["quotaRemaining"]


@pytest.mark.parametrize("start", ["00:05", "11:00", "23:55"])
async def test_a_rate_limit_without_expiry_pauses_until_codat_resets_at_midnight(
    start: str, client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, clock: Clock
) -> None:
    began = clock.set_time_of_day(start)
    reached = sample("client.rateLimit.reached")
    del reached["payload"]["expiryDate"]
    await deliver(client, reached)
    await Worker(ctx).run_until_idle()
    state = await one(engine, RateLimitState)
    next_midnight = datetime.combine(began.date() + timedelta(days=1), time(0), tzinfo=UTC)
    assert state.paused_until == next_midnight


async def test_an_older_rate_limit_event_does_not_undo_a_newer_one(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    reset = sample("client.rateLimit.reset")
    reset["generatedDate"] = "2026-05-03T11:00:00Z"
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = "2026-05-03T10:00:00Z"
    await deliver(client, reset)
    await deliver(client, reached)  # delivered late: generated before the reset
    await Worker(ctx).run_until_idle()
    state = await one(engine, RateLimitState)
    assert state.paused_until is None


async def test_connection_events_out_of_order_keep_the_newest_status(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    newer = sample("connection.disconnected")
    newer["generatedDate"] = "2026-05-03T12:00:00Z"
    newer["payload"]["connection"]["status"] = "Unlinked"
    older = copy.deepcopy(newer)
    older["id"] = str(uuid.uuid4())
    older["eventType"] = "connection.connected"
    older["generatedDate"] = "2026-05-03T09:00:00Z"
    older["payload"]["connection"]["status"] = "Linked"
    await deliver(client, newer)
    await deliver(client, older)
    await Worker(ctx).run_until_idle()
    company_id = newer["payload"]["referenceCompany"]["id"]
    company = await one(engine, Company, Company.id == company_id)
    assert company.connection_status == "Unlinked"


async def test_unknown_types_are_ignored_and_bad_events_go_dead_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    await deliver(
        client,
        {
            "id": "u1",
            "eventType": "expenses.sync.successful",
            "generatedDate": "2026-05-03T10:00:00Z",
            "payload": {},
        },
    )
    await deliver(
        client,
        {
            "id": "u2",
            "eventType": "bills.write.successful",
            "generatedDate": "2026-05-03T10:00:00Z",
            "payload": {"status": "Success"},
        },
    )
    await Worker(ctx).run_until_idle()
    by_id = {e.event_id: e for e in await events(engine)}
    assert by_id["u1"].status == EventStatus.IGNORED
    assert by_id["u2"].status == EventStatus.DEAD
    assert "push operation key" in (by_id["u2"].last_error or "")
    assert by_id["u2"].attempts == 1


async def test_processing_an_event_twice_leaves_the_same_state(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    from sqlalchemy import update

    seed_company(fake_codat, bills=3)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    before = await local_records(engine, "bills")
    async with engine.begin() as connection:  # as if a worker died before marking it done
        await connection.execute(
            update(WebhookEvent).values(status="pending", next_attempt_at=ctx.clock())
        )
    await Worker(ctx).run_until_idle()
    after = await local_records(engine, "bills")
    assert {k: v.data for k, v in after.items()} == {k: v.data for k, v in before.items()}
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.initial_read_status == "incomplete"


async def test_stopping_a_worker_hands_back_what_it_holds(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    """SIGTERM: work in hand gets the grace period, then goes back to the queue, unspent."""
    ctx = make_ctx(worker_shutdown_grace_seconds=0.2)
    seed_company(fake_codat, bills=3)
    fake_codat.delay_all = 3.0  # the pull is still waiting on Codat when the stop comes
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    stop = asyncio.Event()
    worker = Worker(ctx)
    running = asyncio.create_task(worker.run(stop))
    await until_called(fake_codat, "/data/bills")
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    job = await one(engine, Job, Job.kind == "pull")
    assert (job.status, job.attempts, job.locked_until) == ("pending", 0, None)
    fake_codat.delay_all = 0
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")


def failed_write(fake: FakeCodat, ctx: Context, company_id: str) -> dict[str, Any]:
    """A `bills.write.unsuccessful` event of its own, whose push operation the fake holds."""
    body = copy.deepcopy(sample("bills.write.unsuccessful"))
    body["id"] = str(uuid.uuid4())
    body["payload"]["id"] = str(uuid.uuid4())
    body["payload"]["referenceCompany"]["id"] = company_id
    fake.add_company(company_id, CONNECTION)
    fake.add_push_operation(
        company_id,
        key=body["payload"]["id"],
        data_type="bills",
        status="Failed",
        requested=ctx.clock(),
        error_message="Validation failed",
    )
    return body


async def test_a_worker_that_lost_its_lease_leaves_no_trace(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    """The event's effects and its ending commit together: a worker whose lease ran out
    (another worker claimed the event) writes neither, and the new owner's claim stands."""
    from sqlalchemy import update

    ctx = make_ctx()
    body = failed_write(fake_codat, ctx, COMPANY)
    await deliver(client, body)
    fake_codat.delay_all = 1.0
    running = asyncio.create_task(Worker(ctx).run_until_idle())
    await until_called(fake_codat, "/push/")
    async with engine.begin() as connection:  # the lease ran out; another worker took it
        await connection.execute(update(WebhookEvent).values(locked_by="another-worker"))
    await asyncio.wait_for(running, timeout=10)
    assert await count_rows(engine, "write_outcomes") == 0
    [event] = await events(engine)
    assert (event.status, event.locked_by, event.processed_at) == (
        "processing",
        "another-worker",
        None,
    )


async def test_stopping_hands_back_what_was_claimed_ahead_unspent(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    """A worker claims a little ahead of its free slots; on SIGTERM what it had not
    started goes back to the queue at once, without spending an attempt."""
    ctx = make_ctx(
        worker_concurrency=1,
        worker_shutdown_grace_seconds=0.1,
    )
    for company in range(3):
        await deliver(client, failed_write(fake_codat, ctx, codat_id("company", company)))
    fake_codat.delay_all = 3.0
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(ctx).run(stop))
    await until_called(fake_codat, "/push/")
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    rows = await events(engine)
    assert [(e.status, e.attempts, e.locked_until) for e in rows] == [("pending", 0, None)] * 3
    fake_codat.delay_all = 0
    await Worker(ctx).run_until_idle()
    assert [e.status for e in await events(engine)] == ["processed"] * 3


async def test_a_finished_event_is_never_put_back_in_the_queue(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    """A worker cancelled (or cut off) just after its finish committed hands the event
    back; the hand-back must not reopen an event already processed."""
    from app.processing.queue import claim_due, finish_event, renew_leases, reschedule

    await deliver(client, sample("bills.write.successful"))
    now = ctx.clock()
    async with engine.begin() as connection:
        [event] = await claim_due(
            connection, WebhookEvent, worker_id="w1", limit=1, now=now, lease=timedelta(60)
        )
        assert await finish_event(connection, event, "w1", status="processed", now=now)
    async with engine.begin() as connection:
        await reschedule(connection, event, "w1", at=now, error=None, count_attempt=False)
        await renew_leases(connection, WebhookEvent, [event.id], "w1", now + timedelta(60))
    [after] = await events(engine)
    assert (after.status, after.attempts, after.locked_until) == ("processed", 1, None)


async def test_a_claim_takes_expired_leases_then_due_events_in_due_order(
    engine: AsyncEngine, clock: Clock
) -> None:
    """Never an event not yet due or still leased; at most `limit`; a worker's expired
    lease first, then the longest due."""
    from sqlalchemy import insert

    from app.processing.queue import claim_due

    now = clock()
    rows = {
        "due-3": ("pending", now - timedelta(seconds=3), None),
        "due-1": ("pending", now - timedelta(seconds=1), None),
        "later": ("pending", now + timedelta(seconds=60), None),
        "expired": ("processing", now - timedelta(seconds=9), now - timedelta(seconds=5)),
        "held": ("processing", now - timedelta(seconds=9), now + timedelta(seconds=60)),
        "due-2": ("pending", now - timedelta(seconds=2), None),
    }
    async with engine.begin() as connection:
        await connection.execute(
            insert(WebhookEvent),
            [
                {
                    "delivery_id": name,
                    "received_at": now,
                    "raw_body": b"{}",
                    "status": status,
                    "attempts": 0,
                    "next_attempt_at": due,
                    "locked_until": until,
                    "locked_by": "gone" if until else None,
                }
                for name, (status, due, until) in rows.items()
            ],
        )

    async def claim(limit: int) -> set[str]:
        async with engine.begin() as connection:
            claimed = await claim_due(
                connection, WebhookEvent, worker_id="w", limit=limit, now=now, lease=timedelta(60)
            )
        return {event.delivery_id for event in claimed}

    assert await claim(3) == {"expired", "due-3", "due-2"}
    assert await claim(10) == {"due-1"}
    assert await claim(10) == set()


async def test_events_claimed_ahead_are_handed_back_when_no_slot_frees(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    """A worker whose slots are all held by long work does not hoard what it claimed
    ahead: after one lease renewal those events are back in the queue for others."""
    ctx = make_ctx(
        worker_concurrency=1,
        worker_lease_seconds=0.6,  # renewals every 0.2 s
        worker_poll_interval=60,  # no second claim while we look
    )
    for company in range(3):
        await deliver(client, failed_write(fake_codat, ctx, codat_id("company", company)))
    fake_codat.delay_all = 3.0
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(ctx).run(stop))
    try:
        await until_called(fake_codat, "/push/")
        await asyncio.sleep(1.0)
        # One running; the one claimed ahead handed back, unspent; the third never taken.
        rows = await events(engine)
        assert sorted((e.status, e.attempts) for e in rows) == [
            ("pending", 0),
            ("pending", 0),
            ("processing", 1),
        ]
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)


async def test_a_worker_whose_lease_renewal_dies_stops_and_hands_its_work_back(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without renewals its leases would run out mid-work and another worker would take
    the same items: the worker stops as on SIGTERM and says why (its supervisor restarts it)."""
    ctx = make_ctx(worker_lease_seconds=0.3, worker_shutdown_grace_seconds=0.1)
    seed_company(fake_codat, bills=3)
    fake_codat.delay_all = 3.0  # the pull is still waiting on Codat when renewal dies
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))

    async def broken_renewal(*args: object, **kwargs: object) -> None:
        raise RuntimeError("renewal bug")

    monkeypatch.setattr("app.processing.queues.renew_leases", broken_renewal)
    running = asyncio.create_task(Worker(ctx).run(asyncio.Event()))
    with pytest.raises(HelperTaskDied, match="lease renewal"):
        await asyncio.wait_for(running, timeout=10)
    job = await one(engine, Job, Job.kind == "pull")
    assert (job.status, job.attempts, job.locked_until) == ("pending", 0, None)
    monkeypatch.undo()
    fake_codat.delay_all = 0
    await Worker(ctx).run_until_idle()
    await assert_local_copy_equals_fake(engine, fake_codat, "bills")


async def test_a_malformed_job_goes_dead_at_once(
    engine: AsyncEngine, make_ctx: Callable[..., Context], clock: Clock
) -> None:
    """A job that lacks what its kind needs (or of no known kind) is never retried."""
    ctx = make_ctx()
    async with ctx.sessions.begin() as session:
        await enqueue_job(
            session, kind="pull", key="pull:no-data-type", now=clock.now, company_id=COMPANY
        )
        await enqueue_job(session, kind="no-such-kind", key="mystery", now=clock.now)
    await Worker(ctx).run_until_idle()
    for key in ("pull:no-data-type", "mystery"):
        job = await one(engine, Job, Job.key == key)
        assert (job.status, job.attempts) == ("dead", 1), key
        assert job.last_error is not None and job.last_error.startswith("InvalidJob: ")


async def test_serial_locks_keep_order_and_are_forgotten_when_free() -> None:
    locks = SerialLocks()
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(hold("company-a:bills", "first"), hold("company-a:bills", "second"))
    assert order == ["first in", "first out", "second in", "second out"]
    assert len(locks) == 0, "no lock kept for a key nobody holds"
    await asyncio.gather(*(hold(f"company-{i}:bills", str(i)) for i in range(50)))
    assert len(locks) == 0
