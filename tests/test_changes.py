"""What changed: each change recorded by the event that causes it (never on a rollback),
read through the feed (pages, filters, long-poll), and sent signed to internal endpoints
that verify it with `svix` as a user would; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.changes.record import record_change
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.config import NotifyEndpoint
from app.db import create_engine, session_factory
from app.main import create_app
from app.models import Change, Delivery, WebhookEvent
from app.processing.context import Context
from app.processing.deliveries import Notifier, endpoint_label, run_notifier
from app.processing.reconcile import request_reconcile
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat, make_bill, serve_in_thread
from tests.conftest import (
    Clock,
    PostgresDatabases,
    make_settings,
    new_database_url,
    running,
    sample,
)
from tests.support.consumer import NOTIFY_SECRET, OTHER_SECRET, Consumer
from tests.support.flow import (
    COMPANY,
    CONNECTION,
    codat_id,
    deliver,
    read_event,
    seed_company,
    until_called,
)

AUTH = {"Authorization": "Bearer feed-token"}


async def changes(engine: AsyncEngine, change_type: str | None = None) -> list[Change]:
    async with engine.connect() as connection:
        query = select(Change).order_by(Change.seq)
        if change_type is not None:
            query = query.where(Change.change_type == change_type)
        return [Change(**row._mapping) for row in await connection.execute(query)]


async def process(client: httpx.AsyncClient, ctx: Context, body: dict[str, Any]) -> None:
    """Deliver one signed event and let a worker do everything it leads to."""
    await deliver(client, body)
    await Worker(ctx).run_until_idle()


# -- each change type, recorded by its cause ------------------------------------------------


async def test_an_initial_read_announces_the_company_ready_or_incomplete(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=0)
    await deliver(
        client,
        read_event(
            "read.completed.initial",
            [("bills", "Complete", False), ("paymentMethods", "FetchError", False)],
        ),
    )
    await Worker(ctx).run_until_idle()
    [incomplete] = await changes(engine, "company.incomplete")
    failing = {f["dataType"]: f for f in incomplete.data["failures"]}
    assert incomplete.data["companyId"] == COMPANY
    assert failing["paymentMethods"]["status"] == "FetchError"
    assert failing["paymentMethods"]["issues"][0]["message"] == "it broke"
    assert failing["suppliers"]["status"] == "Missing"
    assert await changes(engine, "company.ready") == []

    types = list(BILL_PAY_DATA_TYPES["async"])
    await deliver(
        client,
        read_event(
            "read.completed.initial",
            [(t, "Complete", False) for t in types],
            generated="2026-05-03T11:00:00Z",
        ),
    )
    await Worker(ctx).run_until_idle()
    [ready] = await changes(engine, "company.ready")
    assert ready.data == {"companyId": COMPANY}


async def test_each_pull_that_changed_records_announces_what_it_changed(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=5)
    await process(client, ctx, read_event("read.completed", [("bills", "Complete", True)]))
    [first] = await changes(engine, "data.changed")
    assert first.data["dataType"] == "bills"
    assert (first.data["created"], first.data["updated"], first.data["deleted"]) == (5, 0, 0)
    assert first.data["pulledAt"]

    clock.advance(60)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-1", amount=99.0))
    fake_codat.delete_record(COMPANY, "bills", "bill-2")
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-new"))
    fake_codat.complete_sync(COMPANY, "bills")
    await process(client, ctx, read_event("read.completed", [("bills", "Complete", True)]))
    [_, second] = await changes(engine, "data.changed")
    assert (second.data["created"], second.data["updated"], second.data["deleted"]) == (1, 1, 1)

    # A pull that finds nothing new announces nothing.
    clock.advance(60)
    fake_codat.complete_sync(COMPANY, "bills")
    await process(client, ctx, read_event("read.completed", [("bills", "Complete", True)]))
    assert len(await changes(engine, "data.changed")) == 2


def write_event(name: str, company_id: str = COMPANY) -> dict[str, Any]:
    body = copy.deepcopy(sample(name))
    body["id"] = str(uuid.uuid4())
    body["payload"]["id"] = str(uuid.uuid4())
    body["payload"]["referenceCompany"]["id"] = company_id
    return body


async def test_write_outcomes_are_announced_with_codats_error(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    failed = write_event("bills.write.unsuccessful")
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.add_push_operation(
        COMPANY,
        key=failed["payload"]["id"],
        data_type="bills",
        status="Failed",
        requested=ctx.clock(),
        error_message="Supplier not found",
        validation_errors=[{"itemId": "SupplierRef", "message": "no", "validatorName": "Bill"}],
    )
    succeeded = write_event("bills.write.successful")
    other = write_event("billPayments.write.successful")
    for body in (failed, succeeded, other):
        await process(client, ctx, body)

    [bill_failed] = await changes(engine, "bill_write.failed")
    assert bill_failed.data["pushOperationKey"] == failed["payload"]["id"]
    assert bill_failed.data["errorMessage"] == "Supplier not found"
    assert bill_failed.data["validation"]["errors"][0]["itemId"] == "SupplierRef"
    [bill_ok] = await changes(engine, "bill_write.succeeded")
    assert bill_ok.data["recordId"] == succeeded["payload"]["record"]["id"]
    assert bill_ok.data["dataType"] == "bills"
    [payment_ok] = await changes(engine, "write.succeeded")
    assert payment_ok.data["dataType"] == "billPayments"

    # The same event again (a replay, a redelivery) changes nothing and announces nothing.
    async with engine.begin() as connection:
        await connection.execute(update(WebhookEvent).values(status="pending", attempts=0))
    await Worker(ctx).run_until_idle()
    assert len(await changes(engine)) == 3


async def test_the_rate_limit_pause_and_its_end_are_announced(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, clock: Clock
) -> None:
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = "2026-05-03T10:00:00Z"
    until = clock.now + timedelta(hours=6)
    reached["payload"]["expiryDate"] = until.isoformat()
    await process(client, ctx, reached)
    reset = sample("client.rateLimit.reset")
    reset["generatedDate"] = "2026-05-03T11:00:00Z"
    await process(client, ctx, reset)
    paused, resumed = await changes(engine)
    assert (paused.change_type, resumed.change_type) == ("rate_limit.paused", "rate_limit.resumed")
    assert paused.data["until"] == until.isoformat()
    assert paused.company_id is None


async def test_reconcile_announces_the_webhooks_it_caught_up(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    await process(client, ctx, read_event("read.completed", [("bills", "Complete", True)]))
    clock.advance(3600)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-missed"))
    fake_codat.complete_sync(COMPANY, "bills")  # ...and its webhook never arrives
    missed_write = codat_id("push", 7)
    fake_codat.add_push_operation(
        COMPANY,
        key=missed_write,
        data_type="bills",
        status="Failed",
        requested=clock.now - timedelta(minutes=5),
        error_message="Tax rate not found",
    )
    async with ctx.sessions.begin() as session:
        await request_reconcile(session, COMPANY, clock.now)
    await Worker(ctx).run_until_idle()

    reads, write = [change.data for change in await changes(engine, "webhooks.missed")]
    assert (reads["companyId"], reads["kind"]) == (COMPANY, "read.completed")
    assert "bills" in reads["dataTypes"]
    assert write == {
        "companyId": COMPANY,
        "kind": "write",
        "pushOperationKey": missed_write,
        "dataType": "bills",
    }
    [failed] = await changes(engine, "bill_write.failed")
    assert failed.data["errorMessage"] == "Tax rate not found"
    pulled = {
        change.data["dataType"]: change.data["created"]
        for change in (await changes(engine, "data.changed"))[1:]
    }
    assert pulled["bills"] == 1, "the caught-up pull announces what it brought"


def lifecycle_event(event_type: str, generated: str, status: str = "Linked") -> dict[str, Any]:
    body = copy.deepcopy(sample("connection.disconnected"))
    body["id"] = str(uuid.uuid4())
    body["eventType"] = event_type
    body["generatedDate"] = generated
    if event_type.startswith("company."):
        body["payload"] = {"id": COMPANY, "name": "Toft stores"}
    else:
        body["payload"]["connection"]["status"] = status
    return body


async def test_the_connection_lifecycle_is_announced(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    disconnected = lifecycle_event(
        "connection.disconnected", "2026-05-08T16:45:12Z", status="Deauthorized"
    )
    await process(client, ctx, disconnected)
    await process(client, ctx, lifecycle_event("connection.reconnected", "2026-05-08T17:00:00Z"))
    # An older disconnection arriving late changes nothing, so announces nothing.
    await process(client, ctx, lifecycle_event("connection.failed", "2026-05-08T16:50:00Z"))
    await process(client, ctx, lifecycle_event("company.deleted", "2026-05-09T09:00:00Z"))

    reauth, reconnected, deleted = await changes(engine)
    assert reauth.change_type == "company.needs_reauth"
    assert reauth.data["linkUrl"] == disconnected["payload"]["connection"]["linkUrl"]
    assert reauth.data["connectionId"] == CONNECTION
    assert (reconnected.change_type, reconnected.company_id) == ("company.reconnected", COMPANY)
    assert (deleted.change_type, deleted.data) == ("company.deleted", {"companyId": COMPANY})


async def test_no_change_is_announced_when_its_transaction_rolls_back(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    """A worker whose lease ran out (another worker took the event) commits nothing: the
    write outcome and its change are both rolled back."""
    ctx = make_ctx()
    body = write_event("bills.write.unsuccessful")
    fake_codat.add_company(COMPANY, CONNECTION)
    fake_codat.add_push_operation(
        COMPANY,
        key=body["payload"]["id"],
        data_type="bills",
        status="Failed",
        requested=ctx.clock(),
        error_message="Validation failed",
    )
    await deliver(client, body)
    fake_codat.delay_all = 1.0
    running_worker = asyncio.create_task(Worker(ctx).run_until_idle())
    await until_called(fake_codat, "/push/")
    async with engine.begin() as connection:
        await connection.execute(update(WebhookEvent).values(locked_by="another-worker"))
    await asyncio.wait_for(running_worker, timeout=10)
    assert await changes(engine) == []


# -- the feed ---------------------------------------------------------------------------


@pytest.fixture
async def feed(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, status_api_tokens="feed-token"), engine=engine)
    async with running(app) as client:
        yield client


async def add_change(
    engine: AsyncEngine, change_type: str, company_id: str | None, clock: Clock, **data: Any
) -> str:
    """Record a change as a worker would, and wait until the feed may hand it out."""
    async with session_factory(engine).begin() as session:
        change_id = await record_change(
            session, change_type, company_id=company_id, data=data, now=clock.now
        )
    await until_readable(engine)
    return change_id


async def until_readable(engine: AsyncEngine, within: float = 20.0) -> None:
    """On PostgreSQL the feed withholds a change while any transaction older than its own
    is open (app/changes/feed.py), and transaction ids are the whole server's: another
    database's open transaction (another suite on the same server) delays it too."""
    if engine.dialect.name != "postgresql":
        return
    query = text(
        "SELECT coalesce(max(tx), 0) < txid_snapshot_xmin(txid_current_snapshot()) FROM changes"
    )
    for _ in range(int(within / 0.05)):
        async with engine.connect() as connection:
            if (await connection.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"changes still withheld after {within} s")


async def test_the_feed_pages_oldest_first_and_filters(
    feed: httpx.AsyncClient, engine: AsyncEngine, clock: Clock
) -> None:
    other = codat_id("company", 2)
    made = [
        await add_change(engine, "company.ready", COMPANY, clock),
        await add_change(engine, "data.changed", COMPANY, clock, dataType="bills"),
        await add_change(engine, "company.ready", other, clock),
        await add_change(engine, "rate_limit.paused", None, clock),
        await add_change(engine, "bill_write.failed", COMPANY, clock),
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await feed.get("/api/v1/changes", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert seen == made, "every change once, oldest first; an empty page keeps the cursor"
    first = (await feed.get("/api/v1/changes", headers=AUTH)).json()["items"][1]
    assert first["type"] == "data.changed"
    assert first["data"] == {"companyId": COMPANY, "dataType": "bills"}
    assert first["timestamp"]

    typed = await feed.get(
        "/api/v1/changes", params={"types": "company.ready,bill_write.failed"}, headers=AUTH
    )
    assert [i["id"] for i in typed.json()["items"]] == [made[0], made[2], made[4]]
    by_company = await feed.get("/api/v1/changes", params={"company_id": other}, headers=AUTH)
    assert [i["id"] for i in by_company.json()["items"]] == [made[2]]

    assert (await feed.get("/api/v1/changes")).status_code == 401
    unknown = await feed.get("/api/v1/changes", params={"types": "bill.paid"}, headers=AUTH)
    assert unknown.status_code == 400 and "bill.paid" in unknown.json()["error"]
    bad = await feed.get("/api/v1/changes", params={"cursor": "not-a-cursor"}, headers=AUTH)
    assert bad.status_code == 400
    too_long = await feed.get("/api/v1/changes", params={"wait": 31}, headers=AUTH)
    assert too_long.status_code == 422


async def test_a_waiting_reader_gets_the_next_change_and_holds_no_connection(
    feed: httpx.AsyncClient, engine: AsyncEngine, clock: Clock
) -> None:
    await add_change(engine, "company.ready", COMPANY, clock)
    page = (await feed.get("/api/v1/changes", headers=AUTH)).json()
    idle = engine.pool.checkedout()  # type: ignore[attr-defined]
    waiting = asyncio.create_task(
        feed.get(
            "/api/v1/changes",
            params={"cursor": page["next_cursor"], "wait": 20},
            headers=AUTH,
        )
    )
    await asyncio.sleep(0.3)  # let it look, find nothing and wait
    assert not waiting.done()
    assert engine.pool.checkedout() == idle, "a waiting request holds no connection"  # type: ignore[attr-defined]
    made = await add_change(engine, "data.changed", COMPANY, clock, dataType="bills")
    response = await asyncio.wait_for(waiting, timeout=15)
    assert [item["id"] for item in response.json()["items"]] == [made]


async def test_a_change_committed_late_is_not_skipped_by_a_reader(
    postgres_databases: PostgresDatabases, tmp_path: Path, clock: Clock
) -> None:
    """PostgreSQL only (SQLite has one writer at a time): a change whose transaction began
    first but commits last is still read, after the one that committed before it."""
    url = await new_database_url("postgresql", tmp_path, postgres_databases)
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        app = create_app(make_settings(url, status_api_tokens="feed-token"), engine=engine)
        async with running(app) as feed, sessions.begin() as slow:
            late = await record_change(
                slow, "company.ready", company_id=COMPANY, data={}, now=clock.now
            )
            async with sessions.begin() as quick:
                early = await record_change(
                    quick, "data.changed", company_id=COMPANY, data={}, now=clock.now
                )
            first = (await feed.get("/api/v1/changes", headers=AUTH)).json()
            assert first["items"] == [], "the later change waits for the open transaction"
            await slow.commit()
            await until_readable(engine)
            rest = (await feed.get("/api/v1/changes", headers=AUTH)).json()
            assert [item["id"] for item in rest["items"]] == [late, early]
    finally:
        await engine.dispose()


# -- notifications --------------------------------------------------------------------------


@pytest.fixture
def consumer() -> Iterator[tuple[Consumer, str]]:
    endpoint = Consumer()
    with serve_in_thread(endpoint.app, "consumer") as url:
        yield endpoint, f"{url}/hook"


async def test_every_change_reaches_the_endpoint_once_verified_across_its_outage(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
    clock: Clock,
    consumer: tuple[Consumer, str],
) -> None:
    endpoint, url = consumer
    ctx = make_ctx(
        notify_endpoints=[{"url": url, "secret": NOTIFY_SECRET}],
        notify_retry_base_seconds=30,
        notify_retry_max_seconds=60,
    )
    fake_codat.now = clock
    seed_company(fake_codat, bills=3)
    endpoint.fail_next = 4  # the endpoint answers 500 for a while
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await process(client, ctx, write_event("bills.write.successful"))
    made = {change.id for change in await changes(engine)}
    assert len(made) == 2

    def counted(outcome: str) -> float:
        labels = {"endpoint": url, "outcome": outcome}
        return REGISTRY.get_sample_value("codat_notifications_total", labels) or 0.0

    before = {outcome: counted(outcome) for outcome in ("delivered", "retry")}
    notifier = Notifier(ctx, "test-notifier")
    try:
        for _ in range(10):
            await notifier.run_until_idle()
            if set(endpoint.received) == made:
                break
            clock.advance(61)  # past every backoff
        assert set(endpoint.received) == made
        assert endpoint.rejected == 0
        assert sum(endpoint.requests.values()) == 2 + 4, "one success each after 4 500s"
        assert counted("delivered") - before["delivered"] == 2
        assert counted("retry") - before["retry"] == 4
        message = next(iter(endpoint.received.values()))
        assert set(message) == {"type", "id", "timestamp", "data"}
        async with engine.connect() as connection:
            rows = (await connection.execute(select(Delivery.status, Delivery.attempts))).all()
        assert {status for status, _ in rows} == {"delivered"}
        # Nothing is sent twice once delivered.
        clock.advance(3600)
        await notifier.run_until_idle()
        assert sum(endpoint.requests.values()) == 6
    finally:
        await notifier.aclose()


async def test_a_filtered_endpoint_gets_only_its_types(
    engine: AsyncEngine, make_ctx: Callable[..., Context], clock: Clock
) -> None:
    everything, only_writes = Consumer(), Consumer(OTHER_SECRET)
    with (
        serve_in_thread(everything.app, "all") as all_url,
        serve_in_thread(only_writes.app, "writes") as writes_url,
    ):
        ctx = make_ctx(
            notify_endpoints=[
                {"url": f"{all_url}/hook", "secret": NOTIFY_SECRET},
                {
                    "url": f"{writes_url}/hook",
                    "secret": OTHER_SECRET,
                    "types": ["bill_write.failed", "bill_write.succeeded"],
                },
            ]
        )
        async with ctx.sessions.begin() as session:
            for change_type in ("company.ready", "bill_write.failed", "data.changed"):
                await ctx.record_change(session, change_type, COMPANY, {})
        notifier = Notifier(ctx, "test-notifier")
        try:
            await notifier.run_until_idle()
        finally:
            await notifier.aclose()
    assert sorted(m["type"] for m in everything.received.values()) == [
        "bill_write.failed",
        "company.ready",
        "data.changed",
    ]
    assert [m["type"] for m in only_writes.received.values()] == ["bill_write.failed"]
    assert everything.rejected == only_writes.rejected == 0


async def test_a_dedicated_notifier_sends_what_workers_leave_to_it(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
    clock: Clock,
    consumer: tuple[Consumer, str],
) -> None:
    """NOTIFY_IN_WORKER=false: the worker processes events and sends nothing; a
    `codat-webhooks notifier` (run_notifier) wakes on the committed changes and sends them."""
    endpoint, url = consumer
    ctx = make_ctx(
        notify_endpoints=[{"url": url, "secret": NOTIFY_SECRET}],
        notify_in_worker=False,
        worker_poll_interval=0.05,
    )
    fake_codat.now = clock
    seed_company(fake_codat, bills=3)
    worker = Worker(ctx)
    assert worker.notifier is None
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await process(client, ctx, write_event("bills.write.successful"))
    await worker.run_until_idle()
    made = {change.id for change in await changes(engine)}
    assert len(made) >= 2 and endpoint.received == {}, "the worker sent nothing"

    stop = asyncio.Event()
    notifier = asyncio.create_task(run_notifier(ctx, "test-notifier", stop))
    try:
        for _ in range(200):
            if set(endpoint.received) == made:
                break
            await asyncio.sleep(0.05)
        assert set(endpoint.received) == made
    finally:
        stop.set()
        await asyncio.wait_for(notifier, 10)
    async with engine.connect() as connection:
        statuses = (await connection.execute(select(Delivery.status))).scalars().all()
    assert set(statuses) == {"delivered"} and len(statuses) == len(made)
    assert sum(endpoint.requests.values()) == len(made), "each sent once"


async def test_an_endpoint_down_past_the_span_makes_deliveries_dead_and_replayable(
    feed: httpx.AsyncClient,
    engine: AsyncEngine,
    make_ctx: Callable[..., Context],
    clock: Clock,
    consumer: tuple[Consumer, str],
) -> None:
    endpoint, url = consumer
    ctx = make_ctx(
        notify_endpoints=[{"url": url, "secret": NOTIFY_SECRET}],
        notify_retry_span=timedelta(hours=1),
        notify_retry_base_seconds=600,
        notify_retry_max_seconds=1200,
    )
    endpoint.fail_next = 1000
    async with ctx.sessions.begin() as session:
        await ctx.record_change(session, "company.ready", COMPANY, {})
        await ctx.record_change(session, "company.ready", codat_id("company", 3), {})
    notifier = Notifier(ctx, "test-notifier")
    try:
        for _ in range(12):
            await notifier.run_until_idle()
            clock.advance(1300)
        listed = await feed.get("/api/v1/deliveries", params={"status": "dead"}, headers=AUTH)
        dead = listed.json()["items"]
        assert len(dead) == 2 and {d["last_error"] for d in dead} == {"HTTP 500"}
        assert endpoint.received == {}

        endpoint.fail_next = 0
        one = await feed.post(f"/api/v1/deliveries/{dead[0]['id']}/replay", headers=AUTH)
        assert one.status_code == 202
        again = await feed.post(f"/api/v1/deliveries/{dead[0]['id']}/replay", headers=AUTH)
        assert again.status_code == 409, "already on its way"
        await notifier.run_until_idle()
        assert len(endpoint.received) == 1
        refused = await feed.post("/api/v1/deliveries/replay", json={}, headers=AUTH)
        assert refused.status_code == 400
        rest = await feed.post(
            "/api/v1/deliveries/replay", json={"company_id": dead[1]["company_id"]}, headers=AUTH
        )
        assert rest.json() == {"queued": 1}
        await notifier.run_until_idle()
        assert len(endpoint.received) == 2
    finally:
        await notifier.aclose()


def test_an_endpoint_secret_must_be_a_whsec_key() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        NotifyEndpoint(url="http://127.0.0.1/hook", secret="not-a-secret")
    with pytest.raises(ValueError):
        NotifyEndpoint(url="ftp://example/hook", secret=NOTIFY_SECRET)


def test_an_endpoint_is_shown_without_its_user_password_or_query() -> None:
    """Its label goes to metrics, logs and traces: never what may hold a secret."""
    assert endpoint_label("https://user:s3cret@hooks.example:8443/in?token=t") == (
        "https://hooks.example:8443/in"
    )
    assert endpoint_label("http://[::1]:9000/hook") == "http://[::1]:9000/hook"
