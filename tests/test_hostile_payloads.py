"""Signed but hostile payloads (issue 16, "with a signed payload"): Codat's own bugs look
like these too. Each is kept, never a 500, and never lets a payload steer a call to
Codat; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.client import CodatClient
from app.codat.datatypes import MAX_DATA_TYPE_LENGTH, MAX_DATA_TYPES_PER_EVENT
from app.codat.errors import NotACodatId
from app.codat.ids import is_codat_id, segment
from app.metrics import WEBHOOKS_RECEIVED
from app.models import DataTypeState, EventStatus, Job, Record, WriteOutcome
from app.processing.context import Context
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat
from app.webhooks.route import incoming_event
from app.webhooks.store import EventWriter, IncomingEvent, StoreResult
from tests.conftest import count_rows, sample
from tests.support.flow import COMPANY, events, one, read_event, seed_company
from tests.support.signing import sign

URL = "/webhooks/codat"
TRAVERSAL = "x/../../../webhooks?"


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    raw = json.dumps(body).encode()
    return await client.post(URL, content=raw, headers=sign(raw))


# -- ids and URLs ---------------------------------------------------------------------


def test_codat_ids_are_uuids_as_codat_writes_them() -> None:
    assert is_codat_id(COMPANY)
    assert is_codat_id("8a210b68-6988-11ed-a1eb-0242ac120002")  # Codat's own, version 1
    assert is_codat_id(COMPANY.upper())
    for odd in (
        "company-04",
        TRAVERSAL,
        "..",
        "",
        COMPANY + "\n",
        COMPANY.replace("-", ""),
        "{" + COMPANY + "}",
        "0498e921-9b53-4396-a412-4f2f5983b0a2\x00",
        None,
        42,
    ):
        assert not is_codat_id(odd), odd


def test_a_path_segment_cannot_leave_its_place() -> None:
    for value in (TRAVERSAL, "..", ".", "a/b", "a?b", "a#b", "%2e%2e", "a b"):
        encoded = segment(value)
        assert "/" not in encoded and "?" not in encoded and "#" not in encoded, value
        assert encoded.strip(".") != "", value
    assert segment("bills") == "bills"


async def test_the_client_refuses_odd_ids_and_encodes_every_segment() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = CodatClient(api_key="k", transport=httpx.MockTransport(answer))
    try:
        for call in (
            client.push_operation(TRAVERSAL, "a9367074-b5c3-42c4-9be4-be129f43577e"),
            client.push_operation(COMPANY, "../../../webhooks"),
            client.data_status(".."),
            client.queue_refresh(TRAVERSAL, "bills", None),
        ):
            with pytest.raises(NotACodatId):
                await call
        with pytest.raises(NotACodatId):
            async for _ in client.pages(COMPANY, "bankAccounts", connection_id="../x"):
                pass
        assert seen == [], "no call is made with an odd id"
        await client.queue_refresh(COMPANY, "../../../webhooks?", None)
        [request] = seen
        assert request.url.raw_path.startswith(f"/companies/{COMPANY}/data/queue/".encode())
        assert b"/webhooks" not in request.url.raw_path
    finally:
        await client.aclose()


def write_event_with(where: str, odd: object) -> dict[str, Any]:
    body = copy.deepcopy(sample("bills.write.unsuccessful"))
    payload = body["payload"]
    if where == "company":
        payload["referenceCompany"]["id"] = odd
    elif where == "connection":
        payload["connectionId"] = odd
    else:
        payload["id"] = odd  # the push operation key
    return body


@pytest.mark.parametrize(
    ("where", "odd"),
    [
        ("company", TRAVERSAL),
        ("company", "company-04"),
        ("company", 7),
        ("connection", "../../webhooks"),
        ("push operation key", "../../../webhooks?"),
    ],
)
async def test_an_event_with_an_id_codat_cannot_have_made_is_kept_and_never_processed(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    where: str,
    odd: object,
) -> None:
    body = write_event_with(where, odd)
    response = await post(client, body)
    assert response.status_code == 200
    assert response.json() == {"status": "unprocessable"}
    [event] = await events(engine)
    assert event.status == EventStatus.UNPROCESSABLE
    assert event.next_attempt_at is None, "never offered to the worker"
    assert "is not a Codat id" in (event.last_error or "")
    assert event.company_id in (None, body["payload"]["referenceCompany"]["id"])
    assert event.connection_id in (None, body["payload"]["connectionId"])
    await Worker(ctx).run_until_idle()
    assert fake_codat.calls == [], "nothing was asked of Codat"


async def test_a_read_event_naming_a_path_as_company_makes_no_call(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    """The attack of the review: before, the worker sent GET /webhooks with the API key
    and stored the answer as the company's data."""
    seed_company(fake_codat)
    body = read_event("read.completed", [("bills", "Complete", True)])
    body["payload"]["referenceCompany"]["id"] = TRAVERSAL
    assert (await post(client, body)).json() == {"status": "unprocessable"}
    await Worker(ctx).run_until_idle()
    assert fake_codat.calls == []


# -- dates at the edge of the calendar ------------------------------------------------


@pytest.mark.parametrize("generated", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
async def test_a_generated_date_with_no_utc_form_is_unprocessable_not_a_500(
    client: httpx.AsyncClient, engine: AsyncEngine, generated: str
) -> None:
    body = read_event("read.completed", [("bills", "Complete", True)], generated=generated)
    response = await post(client, body)
    assert response.status_code == 200
    assert response.json() == {"status": "unprocessable"}
    [event] = await events(engine)
    assert event.status == EventStatus.UNPROCESSABLE
    assert "generatedDate" in (event.last_error or "")


async def test_payload_dates_with_no_utc_form_are_read_as_missing(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    body = copy.deepcopy(sample("bills.write.successful"))
    body["id"] = str(uuid.uuid4())
    body["payload"]["requestedOnDate"] = "0001-01-01T00:00:00+01:00"
    body["payload"]["completedOnDate"] = "9999-12-31T23:59:59-01:00"
    assert (await post(client, body)).json() == {"status": "stored"}
    await Worker(ctx).run_until_idle()
    [event] = await events(engine)
    assert event.status == EventStatus.PROCESSED, event.last_error
    key = body["payload"]["id"]
    outcome = await one(engine, WriteOutcome, WriteOutcome.push_operation_key == key)
    assert outcome.requested_at is None and outcome.completed_at is None


# -- one bad row must not fail a batch ------------------------------------------------


async def test_a_poisoned_delivery_among_a_hundred_genuine_ones_costs_none_of_them(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The review's attack: a NUL made PostgreSQL refuse the group commit, and 78 of 100
    genuine deliveries beside it got 503. Now all are stored, the NUL kept aside."""
    genuine = [read_event("read.completed", [("bills", "Complete", True)]) for _ in range(100)]
    poisoned = read_event("read.completed", [("bills", "Complete", True)])
    poisoned["eventType"] = "read.completed\x00"
    bodies = [*genuine[:50], poisoned, *genuine[50:]]
    answers = await asyncio.gather(*(post(client, body) for body in bodies))
    assert [a.status_code for a in answers] == [200] * 101
    statuses = Counter(a.json()["status"] for a in answers)
    assert statuses == {"stored": 100, "unprocessable": 1}
    stored = await events(engine)
    assert Counter(e.status for e in stored) == {"pending": 100, "unprocessable": 1}
    [kept] = [e for e in stored if e.status == EventStatus.UNPROCESSABLE]
    assert kept.raw_body == json.dumps(poisoned).encode()
    assert "NUL" in (kept.last_error or "")


async def test_a_row_the_database_refuses_is_kept_aside_and_its_batch_stored(
    engine: AsyncEngine,
) -> None:
    """Whatever the database refuses in one row (here a value its column type rejects,
    on both databases), the batch is stored row by row and that row kept aside."""
    now = datetime.now(UTC)

    def incoming(n: int, **changes: Any) -> IncomingEvent:
        body = json.dumps(read_event("read.completed", [("bills", "Complete", True)])).encode()
        return replace(incoming_event(f"msg_{n}", body, now), **changes)

    writer = EventWriter(engine)
    writer.start()
    try:
        # A naive time is refused by the column type before it reaches either database.
        batch = [incoming(n) for n in range(10)]
        batch.insert(5, incoming(99, generated_at=now.replace(tzinfo=None)))
        batch.append(batch[3])  # a redelivery (msg_3) inside the same batch
        results = await asyncio.gather(*(writer.store(event) for event in batch))
    finally:
        await writer.close()
    assert results.count(StoreResult.STORED) == 10
    assert results[5] is StoreResult.UNPROCESSABLE
    assert results[-1] is StoreResult.DUPLICATE
    by_delivery = {event.delivery_id: event for event in await events(engine)}
    assert len(by_delivery) == 11
    kept = by_delivery["msg_99"]
    assert kept.status == EventStatus.UNPROCESSABLE and kept.next_attempt_at is None
    assert kept.raw_body == batch[5].raw_body, "the signed body is kept byte for byte"
    assert (kept.event_type, kept.company_id, kept.generated_at) == (None, None, None)
    assert "refused" in (kept.last_error or "")


# -- what one event can create ----------------------------------------------------------


def test_the_data_type_cap_is_every_data_type_columns_width() -> None:
    for model in (DataTypeState, Record, WriteOutcome, Job):
        column = model.__table__.c.data_type
        assert getattr(column.type, "length", None) == MAX_DATA_TYPE_LENGTH, model


def many_types(count: int) -> dict[str, Any]:
    return read_event("read.completed", [(f"type{n}", "Complete", True) for n in range(count)])


def long_type() -> dict[str, Any]:
    return read_event("read.completed", [("b" * (MAX_DATA_TYPE_LENGTH + 1), "Complete", True)])


def long_write_type() -> dict[str, Any]:
    body = copy.deepcopy(sample("bills.write.successful"))
    body["eventType"] = "b" * (MAX_DATA_TYPE_LENGTH + 1) + ".write.successful"
    return body


def with_nan() -> dict[str, Any]:
    body = read_event("read.completed", [("bills", "Failed", False)])
    body["payload"]["dataTypes"][0]["issues"] = [{"type": "error", "message": float("nan")}]
    return body


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: many_types(MAX_DATA_TYPES_PER_EVENT + 1), "payload.dataTypes has 65 items"),
        (long_type, "dataType longer than 64"),
        (long_write_type, "data type is longer than 64"),
        (with_nan, "NaN or Infinity"),
    ],
    ids=["too many data types", "long data type", "long write type", "NaN"],
)
async def test_an_event_naming_more_than_one_event_can_is_kept_aside_on_both_databases(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    make: Callable[[], dict[str, Any]],
    reason: str,
) -> None:
    """Before, SQLite stored and processed these while PostgreSQL refused them in the
    worker (a data type over its column, NaN in jsonb), and a thousand dataTypes made a
    thousand rows and jobs."""
    seed_company(fake_codat)
    response = await post(client, make())
    assert (response.status_code, response.json()) == (200, {"status": "unprocessable"})
    [event] = await events(engine)
    assert event.status == EventStatus.UNPROCESSABLE
    assert reason in (event.last_error or "")
    await Worker(ctx).run_until_idle()
    assert await count_rows(engine, "data_type_states") == 0
    assert await count_rows(engine, "jobs") == 0
    assert fake_codat.calls == []


async def test_the_most_data_types_an_event_may_name_are_processed(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context
) -> None:
    body = many_types(MAX_DATA_TYPES_PER_EVENT)
    body["payload"]["dataTypes"][0]["dataType"] = "t" * MAX_DATA_TYPE_LENGTH
    assert (await post(client, body)).json() == {"status": "stored"}
    await Worker(ctx).run_until_idle()
    [event] = await events(engine)
    assert event.status == EventStatus.PROCESSED, event.last_error
    assert await count_rows(engine, "data_type_states") == MAX_DATA_TYPES_PER_EVENT


async def test_an_unknown_event_type_counts_as_other_so_labels_stay_bounded(
    client: httpx.AsyncClient,
) -> None:
    for n in range(3):
        body = copy.deepcopy(sample("read.completed"))
        body["eventType"] = f"made.up.{n}.{uuid.uuid4().hex}"
        assert (await post(client, body)).status_code == 200
    body = copy.deepcopy(sample("read.completed"))
    assert (await post(client, body)).status_code == 200
    samples = {
        sample.labels["event_type"]
        for metric in WEBHOOKS_RECEIVED.collect()
        for sample in metric.samples
    }
    assert not any(label.startswith("made.up.") for label in samples)
    assert {"other", "read.completed"} <= samples


# -- the same delivery id, another body -------------------------------------------------


async def test_a_delivery_id_reused_with_another_body_is_a_duplicate_warned_and_counted(
    client: httpx.AsyncClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    def mismatches() -> float:
        value = REGISTRY.get_sample_value(
            "codat_webhooks_received_total",
            {"event_type": "read.completed", "outcome": "duplicate_mismatch"},
        )
        return value or 0.0

    before = mismatches()
    first = json.dumps(read_event("read.completed", [("bills", "Complete", True)])).encode()
    other = json.dumps(read_event("read.completed", [("bills", "Failed", False)])).encode()
    headers = sign(first, msg_id="msg_reused")
    assert (await client.post(URL, content=first, headers=headers)).json() == {"status": "stored"}
    again = await client.post(URL, content=first, headers=sign(first, msg_id="msg_reused"))
    assert again.json() == {"status": "duplicate"}
    assert mismatches() == before, "a true retry is no mismatch"
    with caplog.at_level(logging.WARNING, logger="app.webhooks.store"):
        changed = await client.post(URL, content=other, headers=sign(other, msg_id="msg_reused"))
    assert (changed.status_code, changed.json()) == (200, {"status": "duplicate"})
    assert mismatches() == before + 1
    assert any("different body" in r.getMessage() for r in caplog.records)
    [kept] = await events(engine)
    assert kept.raw_body == first, "the first body is the one kept"


async def test_twins_in_one_batch_with_different_bodies_are_told_apart(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    bodies = [
        json.dumps(read_event("read.completed", [("bills", "Complete", True)])).encode()
        for _ in range(2)
    ]
    writer = EventWriter(engine)
    writer.start()
    try:
        results = await asyncio.gather(
            writer.store(incoming_event("msg_twin", bodies[0], now)),
            writer.store(incoming_event("msg_twin", bodies[0], now)),
            writer.store(incoming_event("msg_twin", bodies[1], now)),
        )
    finally:
        await writer.close()
    assert list(results) == [
        StoreResult.STORED,
        StoreResult.DUPLICATE,
        StoreResult.DUPLICATE_MISMATCH,
    ]
