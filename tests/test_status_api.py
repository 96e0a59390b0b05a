"""The internal status API: every route, filter and pagination edge, on both databases."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import session_factory
from app.main import create_app, create_split_apps
from app.models import Company, DataTypeState, EventStatus, Record, WebhookEvent, utcnow
from app.processing.context import Context
from app.processing.state import ensure_company
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat, make_bill
from tests.conftest import Clock, make_settings, running, sample
from tests.support.flow import COMPANY, codat_id, deliver, read_event, seed_company
from tests.support.signing import TEST_SECRET, sign

TOKEN = "status-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=f"other-token,{TOKEN}")


async def get(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def walk(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, one page at a time, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await get(client, url, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# -- authentication ---------------------------------------------------------------------


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """Every documented route of the app: (method, path)."""
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def test_every_route_is_documented_but_the_docs_themselves() -> None:
    app = create_app(make_settings("sqlite:///unused.db"))
    documented = {path for _, path in operations(app)}
    assert {"/api/v1/events", "/api/v1/companies", "/api/v1/rate-limit"} <= documented
    assert {"/healthz", "/readyz", "/metrics", "/webhooks/codat"} <= documented
    others = documented - {"/healthz", "/readyz", "/metrics", "/webhooks/codat"}
    assert all(path.startswith("/api/v1/") for path in others)
    undocumented = {getattr(route, "path", None) for route in app.routes} - {None} - documented
    assert undocumented == {
        "/docs",
        "/docs/oauth2-redirect",
        "/docs/assets",
        "/redoc",
        "/openapi.json",
    }


async def test_missing_or_wrong_tokens_get_401_on_every_api_route(
    client: httpx.AsyncClient,
) -> None:
    app = create_app(make_settings("sqlite:///unused.db"))
    api = [(m, p) for m, p in operations(app) if p.startswith("/api/")]
    assert len(api) >= 10
    for method, template in api:
        path = template.replace("{event_id}", "1").replace("{company_id}", "c")
        path = path.replace("{data_type}", "bills").replace("{push_operation_key}", "k")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"error": "missing or invalid bearer token"}


async def test_no_token_configured_means_no_access(engine: AsyncEngine, database_url: str) -> None:
    async with running(create_app(make_settings(database_url), engine=engine)) as client:
        response = await client.get("/api/v1/events", headers={"Authorization": "Bearer "})
        assert response.status_code == 401


# -- events -----------------------------------------------------------------------------


async def deliver_many(client: httpx.AsyncClient) -> None:
    for i in range(5):
        body = sample("bills.write.successful")
        body["id"] = f"write-{i}"
        body["payload"]["id"] = codat_id("push", i)
        body["payload"]["referenceCompany"]["id"] = codat_id("company", 2)
        await deliver(client, body)
    for i in range(3):
        body = read_event("read.completed", [("bills", "Complete", False)])
        body["id"] = f"read-{i}"
        await deliver(client, body)


async def test_events_are_listed_newest_first_with_every_filter_and_cursor(
    client: httpx.AsyncClient,
) -> None:
    await deliver_many(client)
    everything = await walk(client, "/api/v1/events", limit=2)
    assert [e["event_id"] for e in everything] == [
        "read-2",
        "read-1",
        "read-0",
        "write-4",
        "write-3",
        "write-2",
        "write-1",
        "write-0",
    ]
    assert len({e["id"] for e in everything}) == 8, "no item twice across pages"

    writes = await walk(client, "/api/v1/events", event_type="bills.write.successful", limit=3)
    assert len(writes) == 5
    by_company = await walk(client, "/api/v1/events", company_id=COMPANY)
    assert {e["event_id"] for e in by_company} == {"read-0", "read-1", "read-2"}
    pending = await walk(client, "/api/v1/events", status="pending")
    assert len(pending) == 8
    assert await walk(client, "/api/v1/events", status="dead") == []

    middle = everything[4]["received_at"]
    before = await walk(client, "/api/v1/events", received_before=middle)
    after = await walk(client, "/api/v1/events", received_after=middle)
    assert len(before) + len(after) == 8
    first = await get(client, "/api/v1/events", limit=500)
    assert first["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 501}, 422),
        ({"cursor": "not-a-cursor"}, 400),
        ({"received_after": "yesterday"}, 422),
        # Found by the schemathesis run: dates with no UTC form were a 500.
        ({"received_before": "0001-01-01T00:00:00+00:27"}, 400),
    ],
)
async def test_bad_list_parameters_get_a_clear_error(
    client: httpx.AsyncClient, params: dict[str, Any], status: int
) -> None:
    response = await client.get("/api/v1/events", params=params, headers=AUTH)
    assert response.status_code == status
    assert "error" in response.json()


async def test_one_event_shows_payload_attempts_and_timeline(
    client: httpx.AsyncClient, ctx: Context
) -> None:
    body = sample("bill.write.successful")
    await deliver(client, body)
    await Worker(ctx).run_until_idle()
    [event] = (await get(client, "/api/v1/events"))["items"]
    detail = await get(client, f"/api/v1/events/{event['id']}")
    assert detail["payload"] == body["payload"]
    assert detail["status"] == "processed"
    assert detail["attempts"] == 1
    assert [step["what"] for step in detail["timeline"]][-1] == "finished: processed"
    assert detail["received_at"].endswith("Z")
    huge = await client.get(f"/api/v1/events/{2**70}", headers=AUTH)  # was a 500 (fuzz)
    assert huge.status_code == 422
    missing = await client.get("/api/v1/events/999999", headers=AUTH)
    assert (missing.status_code, missing.json()) == (404, {"error": "no event 999999"})


async def test_an_unprocessable_event_shows_its_raw_body_and_cannot_be_replayed(
    client: httpx.AsyncClient,
) -> None:
    body = b"not json at all"
    await client.post("/webhooks/codat", content=body, headers=sign(body))
    [event] = (await get(client, "/api/v1/events", status="unprocessable"))["items"]
    detail = await get(client, f"/api/v1/events/{event['id']}")
    assert (detail["raw_body"], detail["payload"]) == ("not json at all", None)
    replay = await client.post(f"/api/v1/events/{event['id']}/replay", headers=AUTH)
    assert replay.status_code == 409


async def test_replay_one_and_in_bulk_by_filter(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    await deliver_many(client)
    await Worker(ctx).run_until_idle()
    async with engine.begin() as connection:
        await connection.execute(
            update(WebhookEvent)
            .where(WebhookEvent.event_type == "read.completed")
            .values(status=EventStatus.DEAD, last_error="boom")
        )
    dead = await walk(client, "/api/v1/events", status="dead")
    assert len(dead) == 3

    one = await client.post(f"/api/v1/events/{dead[0]['id']}/replay", headers=AUTH)
    assert (one.status_code, one.json()) == (202, {"queued": 1})
    bulk = await client.post(
        "/api/v1/events/replay",
        json={"status": "dead", "event_type": "read.completed", "company_id": COMPANY},
        headers=AUTH,
    )
    assert (bulk.status_code, bulk.json()) == (202, {"queued": 2})
    refused = await client.post("/api/v1/events/replay", json={}, headers=AUTH)
    assert refused.status_code == 400
    await Worker(ctx).run_until_idle()
    assert await walk(client, "/api/v1/events", status="dead") == []


# -- companies, the local copy, writes, rate limit --------------------------------------


async def test_company_status_shows_freshness_records_and_writes(
    client: httpx.AsyncClient, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    seed_company(fake_codat, bills=5)
    await deliver(client, read_event("read.completed.initial", [("bills", "Complete", True)]))
    failed = sample("bills.write.unsuccessful")
    failed["payload"]["referenceCompany"]["id"] = COMPANY
    fake_codat.add_push_operation(
        COMPANY,
        key=failed["payload"]["id"],
        data_type="bills",
        status="Failed",
        requested=clock.now,
        error_message="Supplier is archived",
    )
    await deliver(client, failed)
    await Worker(ctx).run_until_idle()

    companies = await walk(client, "/api/v1/companies", limit=1)
    assert [c["id"] for c in companies] == [COMPANY]
    company = await get(client, f"/api/v1/companies/{COMPANY}")
    assert company["initial_read_status"] == "incomplete"
    bills = next(d for d in company["data_types"] if d["data_type"] == "bills")
    assert bills["record_count"] == 5 and bills["last_pulled_at"] is not None
    assert bills["last_read_status"] == "Complete"
    assert company["writes"] == {"Failed": 1}

    records = await walk(client, f"/api/v1/companies/{COMPANY}/data/bills", limit=2)
    assert sorted(r["id"] for r in records) == [f"bill-{i}" for i in range(5)]
    newest = records[-1]["modified_date"]
    later = await walk(
        client,
        f"/api/v1/companies/{COMPANY}/data/bills",
        modified_after=records[2]["modified_date"],
    )
    assert [r["id"] for r in later] == [r["id"] for r in records[3:]]
    assert later[-1]["modified_date"] == newest

    writes = await walk(client, "/api/v1/writes", status="Failed", company_id=COMPANY)
    assert writes[0]["error_message"] == "Supplier is archived"
    assert await walk(client, "/api/v1/writes", data_type="suppliers") == []
    one = await get(client, f"/api/v1/writes/{failed['payload']['id']}")
    assert one["status"] == "Failed"
    assert (await client.get("/api/v1/writes/nope", headers=AUTH)).status_code == 404
    assert (await client.get("/api/v1/companies/nope", headers=AUTH)).status_code == 404
    nope = await client.get("/api/v1/companies/nope/data/bills", headers=AUTH)
    assert nope.status_code == 404


async def test_the_local_copy_pages_in_order_from_any_cursor(
    client: httpx.AsyncClient, engine: AsyncEngine, clock: Clock
) -> None:
    """Records without a modified date first (by id), then by (modified date, id), ties and
    all, whatever the page size: every record once, in that order, with or without the
    deleted ones and from a modified_after."""
    now = clock()
    # (id, modified, deleted): three without a date, then dates shared by three records each.
    records: list[tuple[str, datetime | None, bool]] = [
        (
            f"bill-{(i * 7) % 23:02d}",
            None if i < 3 else now - timedelta(days=30 - i // 3),
            i % 5 == 0,
        )
        for i in range(23)
    ]
    async with engine.begin() as connection:
        await ensure_company(connection, COMPANY, now)
        await connection.execute(
            insert(Record),
            [
                {
                    "company_id": COMPANY,
                    "data_type": "bills",
                    "record_id": record_id,
                    "modified_date": modified,
                    "is_deleted": deleted,
                    "data": {"id": record_id},
                    "pulled_at": now,
                }
                for record_id, modified, deleted in records
            ],
        )
    ordered = sorted(records, key=lambda r: (r[1] is not None, r[1] or now, r[0]))
    url = f"/api/v1/companies/{COMPANY}/data/bills"
    for limit in (1, 2, 3, 5, 50):
        assert [r["id"] for r in await walk(client, url, limit=limit)] == [r[0] for r in ordered]
    live = await walk(client, url, limit=2, include_deleted="false")
    assert [r["id"] for r in live] == [r[0] for r in ordered if not r[2]]
    since = now - timedelta(days=27)
    later = await walk(client, url, limit=2, modified_after=since.isoformat())
    assert [r["id"] for r in later] == [r[0] for r in ordered if r[1] is not None and r[1] > since]


async def test_rate_limit_state(client: httpx.AsyncClient, ctx: Context, clock: Clock) -> None:
    assert (await get(client, "/api/v1/rate-limit"))["paused"] is False
    reached = sample("client.rateLimit.reached")
    reached["payload"]["expiryDate"] = (clock.now + timedelta(hours=1)).isoformat()
    await deliver(client, reached)
    await Worker(ctx).run_until_idle()
    state = await get(client, "/api/v1/rate-limit")
    assert state["paused"] is True
    assert state["daily_quota"] == reached["payload"]["dailyQuota"]
    assert state["quota_remaining"] == 0


async def test_metrics_count_what_happened(client: httpx.AsyncClient) -> None:
    body = json.dumps(sample("read.completed")).encode()
    await client.post("/webhooks/codat", content=body, headers=sign(body))
    await client.post("/webhooks/codat", content=body, headers={"webhook-id": "x"})
    text = (await client.get("/metrics")).text
    assert 'codat_webhooks_received_total{event_type="read.completed",outcome="stored"}' in text
    assert 'outcome="rejected_signature"' in text
    assert 'codat_queue_depth{queue="events",status="pending"} 1.0' in text
    assert "codat_queue_oldest_due_age_seconds" in text
    assert "codat_client_paused 0.0" in text


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_say_what_is_overdue_and_when_codat_last_delivered(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The gauges behind the freshness alerts (deploy/prometheus/alerts.yml)."""
    sessions = session_factory(engine)
    now = utcnow()
    old, recent = now - timedelta(days=2), now - timedelta(hours=1)
    async with sessions.begin() as session:
        await ensure_company(session, "active-co", now)
        await ensure_company(session, "gone-co", now)
        await session.flush()
        await session.execute(
            update(Company).where(Company.id == "gone-co").values(status="deleted")
        )
        for company_id, data_type, pulled, read_status, read_at in [
            ("active-co", "bills", old, None, None),  # overdue
            ("active-co", "suppliers", None, "Complete", old),  # overdue
            ("active-co", "company", recent, None, None),  # pulled lately
            ("active-co", "chartOfAccounts", old, "Complete", recent),  # read, nothing new
            ("active-co", "invoices", old, None, None),  # not Bill Pay
            ("gone-co", "bills", old, None, None),  # not an active company
        ]:
            session.add(
                DataTypeState(
                    company_id=company_id,
                    data_type=data_type,
                    last_pulled_at=pulled,
                    last_read_status=read_status,
                    last_read_at=read_at,
                    record_count=0,
                    updated_at=now,
                )
            )
    before = scraped((await client.get("/metrics")).text)
    assert before[("codat_last_webhook_received_timestamp_seconds", ())] == 0
    body = json.dumps(sample("read.completed")).encode()
    assert (await client.post("/webhooks/codat", content=body, headers=sign(body))).is_success

    metrics = scraped((await client.get("/metrics")).text)
    overdue = {
        dict(labels)["data_type"]: value
        for (name, labels), value in metrics.items()
        if name == "codat_data_types_overdue"
    }
    assert overdue == {
        "bankAccounts": 0,
        "bills": 1,
        "billCreditNotes": 0,
        "billPayments": 0,
        "chartOfAccounts": 0,
        "company": 0,
        "paymentMethods": 0,
        "taxRates": 0,
        "trackingCategories": 0,
        "suppliers": 1,
    }
    assert metrics[("codat_active_companies", ())] == 1
    async with sessions() as session:
        received = await session.scalar(select(WebhookEvent.received_at))
    assert received is not None
    stamp = metrics[("codat_last_webhook_received_timestamp_seconds", ())]
    assert stamp == pytest.approx(received.timestamp(), abs=0.001)


# -- the two listener layouts -----------------------------------------------------------


async def test_with_an_internal_port_the_public_app_answers_only_webhooks_and_health(
    settings: Settings, engine: AsyncEngine
) -> None:
    public, internal = create_split_apps(settings, engine=engine)
    async with running(public) as outside, running(internal) as inside:
        body = json.dumps(sample("read.completed")).encode()
        assert (
            await outside.post("/webhooks/codat", content=body, headers=sign(body))
        ).status_code == 200
        assert (await outside.get("/healthz")).status_code == 200
        assert (await outside.get("/readyz")).status_code == 200
        for path in ("/api/v1/events", "/metrics", "/docs", "/redoc", "/openapi.json"):
            assert (await outside.get(path, headers=AUTH)).status_code == 404, path
        assert len((await get(inside, "/api/v1/events"))["items"]) == 1
        assert (await inside.get("/metrics")).status_code == 200
        assert (await inside.get("/openapi.json")).status_code == 200
        assert (await inside.post("/webhooks/codat", content=body)).status_code in (404, 405)


async def test_by_default_one_app_serves_everything(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs", "/redoc"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/api/v1/events", headers=AUTH)).status_code == 200


# -- logs -------------------------------------------------------------------------------


async def test_logs_carry_no_secret_api_key_or_payload(
    client: httpx.AsyncClient,
    ctx: Context,
    fake_codat: FakeCodat,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    seed_company(fake_codat, bills=1)
    fake_codat.put_record(COMPANY, "bills", make_bill("bill-secretive", reference="PAYLOAD-MARK"))
    fake_codat.complete_sync(COMPANY, "bills")
    fake_codat.fail_next("/data/bills", 500)
    body = read_event("read.completed.initial", [("bills", "Complete", True)])
    body["payload"]["referenceCompany"]["description"] = "PAYLOAD-MARK"
    await deliver(client, body)
    raw = json.dumps(body).encode()
    await client.post("/webhooks/codat", content=raw, headers={**sign(raw), "webhook-id": "x"})
    await client.post("/webhooks/codat", content=b"PAYLOAD-MARK", headers=sign(b"PAYLOAD-MARK"))
    await Worker(ctx).run_until_idle()
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "webhook rejected" in logged and "pulled" in logged, "logs were captured"
    for secret in (
        TEST_SECRET,
        TEST_SECRET.removeprefix("whsec_"),
        ctx.settings.codat_api_key.get_secret_value(),
        "PAYLOAD-MARK",
    ):
        assert secret not in logged
