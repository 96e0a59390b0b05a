"""The connection and company lifecycle (issue 15): a company that needs re-linking or was
deleted gets no call to Codat for its data; linked again it is reconciled at once; Codat's
tags are kept, shown and filtered on. SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.datatypes import BILL_PAY_EVENT_TYPES, LIFECYCLE_EVENT_TYPES
from app.codat.events import company_id_of
from app.config import Settings
from app.db import session_factory
from app.main import create_app
from app.models import Change, Company, DataTypeState, Job, Record, WebhookEvent
from app.processing.context import Context
from app.processing.lifecycle import prune_deleted_companies
from app.processing.queue import enqueue_job
from app.processing.sweep import SWEEP, SWEEP_KEY
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat, make_bill
from tests.conftest import Clock, make_settings, running, sample
from tests.support.flow import (
    COMPANY,
    CONNECTION,
    deliver,
    local_records,
    one,
    read_event,
    seed_company,
)

TOKEN = "lifecycle-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LINK_URL = "https://link-api.codat.io/companies/0498e921/connections/2e9d2c44/start"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=TOKEN)


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, engine=engine)) as client:
        yield client


def connection_event(event_type: str, generated: str, status: str) -> dict[str, Any]:
    body = copy.deepcopy(sample("connection.disconnected"))
    body["id"] = str(uuid.uuid4())
    body["eventType"] = event_type
    body["generatedDate"] = generated
    body["payload"]["connection"]["status"] = status
    body["payload"]["referenceCompany"]["tags"] = {"customerId": "cus_123", "region": "uk"}
    return body


def company_event(event_type: str, generated: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "eventType": event_type,
        "generatedDate": generated,
        "payload": payload,
    }


async def process(client: httpx.AsyncClient, ctx: Context, body: dict[str, Any]) -> None:
    await deliver(client, body)
    await Worker(ctx).run_until_idle()


async def company_json(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(f"/api/v1/companies/{COMPANY}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def company_calls(fake: FakeCodat) -> list[str]:
    return [f"{c.method} {c.path}" for c in fake.calls if c.path.startswith("/companies/")]


async def every_kind_of_work(
    client: httpx.AsyncClient, ctx: Context, engine: AsyncEngine, clock: Clock
) -> None:
    """Everything that would make the service call Codat for the company's data: reads
    that changed records, a failed read, a successful write, a requested refresh and
    reconcile, and a day of sweeps."""
    await process(
        client,
        ctx,
        read_event(
            "read.completed",
            [("bills", "Complete", True), ("suppliers", "FetchError", False)],
            generated="2026-05-08T18:00:00Z",
        ),
    )
    write = copy.deepcopy(sample("bills.write.successful"))
    write["id"] = str(uuid.uuid4())
    write["payload"]["referenceCompany"]["id"] = COMPANY
    write["payload"]["connectionId"] = CONNECTION
    await process(client, ctx, write)
    assert (
        await client.post(f"/api/v1/companies/{COMPANY}/refresh", headers=AUTH)
    ).status_code == 202
    assert (
        await client.post(f"/api/v1/companies/{COMPANY}/reconcile", headers=AUTH)
    ).status_code == 202
    async with session_factory(engine).begin() as session:
        await enqueue_job(session, kind=SWEEP, key=SWEEP_KEY, now=clock.now)
    for _ in range(8):
        clock.advance(3 * 3600)
        await Worker(ctx).run_until_idle()


async def test_a_disconnected_company_gets_no_call_until_reconnected_then_is_reconciled(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=3)
    await process(
        client,
        ctx,
        connection_event("connection.disconnected", "2026-05-08T16:45:12Z", "Deauthorized"),
    )
    shown = await company_json(client)
    assert (shown["needs_reauth"], shown["reauth_reason"]) == (True, "connection.disconnected")
    assert shown["link_url"] == LINK_URL
    await every_kind_of_work(client, ctx, engine, clock)
    assert company_calls(fake_codat) == [], "no call for a company that needs re-linking"
    assert await local_records(engine, "bills") == {}

    await process(
        client, ctx, connection_event("connection.reconnected", "2026-05-09T09:00:00Z", "Linked")
    )
    shown = await company_json(client)
    assert (shown["needs_reauth"], shown["reauth_reason"]) == (False, None)
    calls = company_calls(fake_codat)
    assert f"GET /companies/{COMPANY}/dataStatus" in calls, "reconciled at once"
    assert len(await local_records(engine, "bills")) == 3, "what it missed is caught up"
    [reconnected] = await changes(engine, "company.reconnected")
    assert reconnected.data["connectionId"] == CONNECTION


async def test_a_deauthorised_status_on_any_connection_event_blocks_too(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat)
    await process(
        client, ctx, connection_event("connection.created", "2026-05-08T16:00:00Z", "PendingAuth")
    )
    assert (await company_json(client))["needs_reauth"] is False
    await process(
        client, ctx, connection_event("connection.failed", "2026-05-08T16:10:00Z", "Linked")
    )
    assert (await company_json(client))["reauth_reason"] == "connection.failed"
    await process(
        client, ctx, connection_event("connection.connected", "2026-05-08T16:20:00Z", "Linked")
    )
    assert (await company_json(client))["needs_reauth"] is False
    await process(
        client, ctx, connection_event("connection.created", "2026-05-08T16:30:00Z", "Unlinked")
    )
    assert (await company_json(client))["reauth_reason"] == "Unlinked"
    # An older event arriving late changes nothing.
    await process(
        client, ctx, connection_event("connection.connected", "2026-05-08T16:25:00Z", "Linked")
    )
    assert (await company_json(client))["needs_reauth"] is True


def banking_event(event_type: str, generated: str, status: str) -> dict[str, Any]:
    """A connection event of the company's bank feed, not its accounting connection."""
    body = connection_event(event_type, generated, status)
    body["payload"]["connection"] |= {
        "id": "7d1e0c55-0b5f-4a8e-9a43-6f1f3c2d9b10",
        "sourceType": "Banking",
        "integrationKey": "nfrg",
        "linkUrl": "https://link-api.codat.io/companies/0498e921/connections/7d1e0c55/start",
    }
    return body


async def connection_id(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.scalar(select(Company.connection_id).where(Company.id == COMPANY))


async def test_only_the_accounting_connection_blocks_or_lifts_the_block(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat)
    accounting = sample("connection.disconnected")["payload"]["connection"]["id"]
    await process(
        client, ctx, connection_event("connection.connected", "2026-05-08T16:00:00Z", "Linked")
    )
    # A bank feed breaking does not stop the bills' work, nor replace the connection.
    await process(
        client, ctx, banking_event("connection.disconnected", "2026-05-08T16:10:00Z", "Unlinked")
    )
    shown = await company_json(client)
    assert (shown["needs_reauth"], shown["link_url"]) == (False, LINK_URL)
    assert await connection_id(engine) == accounting
    assert await changes(engine, "company.needs_reauth") == []

    await process(
        client,
        ctx,
        connection_event("connection.disconnected", "2026-05-08T16:20:00Z", "Deauthorized"),
    )
    # A bank feed linking again does not lift the accounting connection's block.
    await process(
        client, ctx, banking_event("connection.reconnected", "2026-05-08T16:30:00Z", "Linked")
    )
    shown = await company_json(client)
    assert (shown["needs_reauth"], shown["reauth_reason"]) == (True, "connection.disconnected")
    assert await connection_id(engine) == accounting
    assert await changes(engine, "company.reconnected") == []


async def test_a_link_url_too_long_to_store_is_dropped_and_the_event_processed(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat)
    too_long = "https://link-api.codat.io/start?state=" + "x" * 3000
    created = company_event(
        "company.created",
        "2026-05-08T16:00:00Z",
        {"id": COMPANY, "name": "Toft stores", "redirect": too_long},
    )
    await process(client, ctx, created)
    broken = connection_event("connection.disconnected", "2026-05-08T16:45:12Z", "Deauthorized")
    broken["payload"]["connection"]["linkUrl"] = too_long
    await process(client, ctx, broken)
    shown = await company_json(client)
    assert (shown["name"], shown["needs_reauth"]) == ("Toft stores", True)
    assert shown["link_url"] is None, "a cut URL would lead nowhere"
    async with engine.connect() as connection:
        statuses = (await connection.execute(select(WebhookEvent.status))).scalars().all()
    assert sorted(statuses) == ["processed", "processed"]


async def test_an_auth_error_read_needs_relinking_and_a_newer_initial_read_lifts_it(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    seed_company(fake_codat, bills=2)
    await process(
        client,
        ctx,
        read_event(
            "read.completed",
            [("bills", "AuthError", False), ("suppliers", "Complete", True)],
            generated="2026-05-08T10:00:00Z",
        ),
    )
    shown = await company_json(client)
    assert (shown["needs_reauth"], shown["reauth_reason"]) == (True, "AuthError")
    assert company_calls(fake_codat) == [], "not even the complete type is pulled"
    [reauth] = await changes(engine, "company.needs_reauth")
    assert (reauth.data["dataType"], reauth.data["status"]) == ("bills", "AuthError")
    # Codat sends read.completed.initial after each authorisation: linked again.
    await process(
        client,
        ctx,
        read_event(
            "read.completed.initial", [("bills", "Complete", True)], generated="2026-05-09T10:00Z"
        ),
    )
    assert (await company_json(client))["needs_reauth"] is False
    assert len(await local_records(engine, "bills")) == 2


async def test_a_deleted_company_stops_all_work_and_prune_removes_its_copy_after_retention(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    make_ctx: Callable[..., Context],
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    await process(client, ctx, read_event("read.completed", [("bills", "Complete", True)]))
    assert len(await local_records(engine, "bills")) == 2
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-late"))
    # A pull waits (debounced) when the company is deleted: it never runs.
    debounced = make_ctx(pull_debounce_seconds=60)
    await process(
        client,
        debounced,
        read_event("read.completed", [("bills", "Complete", True)], generated="2026-05-03T11:00Z"),
    )
    await process(
        client, debounced, company_event("company.deleted", "2026-05-10T09:00:00Z", {"id": COMPANY})
    )
    fake_codat.delete_company(COMPANY)
    fake_codat.reset_calls()
    await every_kind_of_work(client, ctx, engine, clock)
    assert company_calls(fake_codat) == []
    shown = await company_json(client)
    assert shown["status"] == "deleted" and shown["deleted_at"] is not None
    async with engine.connect() as connection:
        pending = select(Job.key).where(Job.status == "pending", Job.company_id == COMPANY)
        assert (await connection.execute(pending)).all() == []
    [deleted] = await changes(engine, "company.deleted")
    assert deleted.data == {"companyId": COMPANY}

    sessions = session_factory(engine)
    kept = await prune_deleted_companies(sessions, cutoff=clock.now - timedelta(days=30))
    assert kept == 0 and len(await local_records(engine, "bills")) == 2, "within retention"
    pruned = await prune_deleted_companies(sessions, cutoff=clock.now + timedelta(seconds=1))
    assert pruned == 1
    assert await local_records(engine, "bills") == {}
    async with engine.connect() as connection:
        states = await connection.execute(
            select(DataTypeState).where(DataTypeState.company_id == COMPANY)
        )
        assert states.all() == []
        assert (await connection.execute(select(Record))).all() == []
    assert (await company_json(client))["status"] == "deleted", "the company stays, deleted"


async def test_company_events_read_payload_id_or_reference_company_and_keep_tags(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    flat = sample_company_created()
    await process(client, ctx, flat)
    shown = await company_json(client)
    assert shown["name"] == "Bank of Dave"
    assert shown["tags"] == {"customerRegion": "us", "uid": "335a086e-8563-4b03-94e3-39544225ecb6"}
    assert shown["link_url"] == f"https://link.codat.io/company/{COMPANY}"

    other = str(uuid.uuid4())
    blog_shape = company_event(
        "company.created",
        "2024-08-08T17:10:35Z",
        {"referenceCompany": {"id": other, "name": "Toft stores", "tags": {"uid": "cus_9"}}},
    )
    assert company_id_of("company.created", blog_shape["payload"]) == other
    await process(client, ctx, blog_shape)
    company = await one(engine, Company, Company.id == other)
    assert (company.name, company.tags) == ("Toft stores", {"uid": "cus_9"})


def sample_company_created() -> dict[str, Any]:
    """The example of Codat's OpenAPI for company.created, for our company."""
    from tests.support import oas

    webhook = oas.load_spec(oas.PLATFORM)["webhooks"]["company.created"]["post"]
    examples = webhook["requestBody"]["content"]["application/json"]["examples"]
    body: dict[str, Any] = copy.deepcopy(next(iter(examples.values()))["value"])
    body["payload"]["id"] = COMPANY
    body["payload"]["redirect"] = f"https://link.codat.io/company/{COMPANY}"
    return body


async def test_tags_are_kept_shown_and_filtered_on(
    client: httpx.AsyncClient, ctx: Context, fake_codat: FakeCodat
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    await process(
        client, ctx, connection_event("connection.connected", "2026-05-08T16:00:00Z", "Linked")
    )
    other = str(uuid.uuid4())
    body = read_event("read.completed", [("bills", "Complete", False)])
    body["payload"]["referenceCompany"] |= {"id": other, "tags": {"customerId": "cus_456"}}
    await process(client, ctx, body)

    async def listed(*params: tuple[str, str]) -> list[str]:
        response = await client.get("/api/v1/companies", params=list(params), headers=AUTH)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert (await company_json(client))["tags"] == {"customerId": "cus_123", "region": "uk"}
    assert await listed(("tag", "customerId:cus_123")) == [COMPANY]
    assert await listed(("tag", "customerId:cus_456")) == [other]
    assert await listed(("tag", "customerId:cus_123"), ("tag", "region:uk")) == [COMPANY]
    assert await listed(("tag", "customerId:cus_123"), ("tag", "region:us")) == []
    assert await listed(("needs_reauth", "false")) == sorted([COMPANY, other])
    bad = await client.get("/api/v1/companies", params={"tag": "no-colon"}, headers=AUTH)
    assert bad.status_code == 400 and "key:value" in bad.json()["error"]
    # An event without tags leaves them as they were.
    untagged = read_event("read.completed", [("bills", "Complete", False)])
    del untagged["payload"]["referenceCompany"]["tags"]
    await process(client, ctx, untagged)
    assert (await company_json(client))["tags"] == {"customerId": "cus_123", "region": "uk"}


def test_register_webhook_subscribes_every_lifecycle_event() -> None:
    assert set(LIFECYCLE_EVENT_TYPES) == {
        "connection.created",
        "connection.connected",
        "connection.reconnected",
        "connection.disconnected",
        "connection.failed",
        "connection.deleted",
        "company.created",
        "company.deleted",
    }
    assert set(LIFECYCLE_EVENT_TYPES) <= set(BILL_PAY_EVENT_TYPES)


async def changes(engine: AsyncEngine, change_type: str) -> list[Change]:
    async with engine.connect() as connection:
        query = select(Change).where(Change.change_type == change_type).order_by(Change.seq)
        return [Change(**row._mapping) for row in await connection.execute(query)]
