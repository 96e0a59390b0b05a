"""POST /webhooks/codat: every sample and every row of DESIGN.md's bad-input table."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.models import EventStatus
from app.webhooks.route import incoming_event
from app.webhooks.store import StoreResult, log_commit
from tests.conftest import count_rows, make_settings, running, sample
from tests.support.flow import events as stored_events
from tests.support.signing import ROTATED_SECRET, WRONG_SECRET, sign

URL = "/webhooks/codat"


async def post_signed(
    client: httpx.AsyncClient, body: bytes, **sign_options: object
) -> httpx.Response:
    return await client.post(URL, content=body, headers=sign(body, **sign_options))  # type: ignore[arg-type]


async def test_every_sample_is_stored_once_with_its_facts(
    client: httpx.AsyncClient, engine: AsyncEngine, samples: dict[str, bytes]
) -> None:
    for name, body in samples.items():
        response = await client.post(URL, content=body, headers=sign(body, msg_id=f"msg_{name}"))
        assert response.status_code == 200, name
        assert response.json() == {"status": "stored"}

    events = {event.delivery_id: event for event in await stored_events(engine)}
    assert len(events) == len(samples)
    for name, body in samples.items():
        event = events[f"msg_{name}"]
        envelope = json.loads(body)
        payload = envelope["payload"]
        assert event.raw_body == body, "the raw body is kept byte for byte"
        assert event.event_id == envelope["id"]
        assert event.event_type == envelope["eventType"]
        assert event.status == EventStatus.PENDING
        expected_company = payload.get("referenceCompany", {}).get("id")
        assert event.company_id == expected_company, name
        assert event.generated_at is not None
        assert event.received_at.tzinfo is not None


async def test_connection_id_comes_from_each_payload_shape(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    read = sample("read.completed")
    write = sample("bills.write.successful")
    connection = sample("connection.disconnected")
    for body in (read, write, connection):
        raw = json.dumps(body).encode()
        assert (await post_signed(client, raw)).status_code == 200
    by_type = {event.event_type: event for event in await stored_events(engine)}
    assert (
        by_type["read.completed"].connection_id == read["payload"]["dataTypes"][0]["connectionId"]
    )
    assert by_type["bills.write.successful"].connection_id == write["payload"]["connectionId"]
    assert (
        by_type["connection.disconnected"].connection_id
        == connection["payload"]["connection"]["id"]
    )


async def test_company_events_take_the_company_id_from_the_payload(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(
        {
            "id": "c0ffee00-0000-4000-8000-000000000001",
            "eventType": "company.created",
            "generatedDate": "2026-05-03T10:00:23Z",
            "payload": {"id": "8a210b68-6988-11ed-a1eb-0242ac120002", "name": "Toft stores"},
        }
    ).encode()
    assert (await post_signed(client, body)).status_code == 200
    [event] = await stored_events(engine)
    assert event.company_id == "8a210b68-6988-11ed-a1eb-0242ac120002"


async def test_unknown_event_type_is_accepted_and_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(
        {
            "id": "7c1a2b3c-0000-4000-8000-000000000002",
            "eventType": "expenses.sync.successful",
            "generatedDate": "2026-05-03T10:00:23.6464237Z",
            "payload": {"anything": [1, 2, 3]},
        }
    ).encode()
    response = await post_signed(client, body)
    assert response.status_code == 200
    [event] = await stored_events(engine)
    assert event.event_type == "expenses.sync.successful"
    assert event.status == EventStatus.PENDING


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
async def test_both_header_styles_verify(
    client: httpx.AsyncClient, engine: AsyncEngine, prefix: str
) -> None:
    body = json.dumps(sample("read.completed")).encode()
    response = await post_signed(client, body, prefix=prefix, msg_id="msg_headers")
    assert response.status_code == 200
    [event] = await stored_events(engine)
    assert event.delivery_id == "msg_headers"


async def test_a_rotated_secret_is_accepted_alongside_the_old_one(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(sample("read.completed")).encode()
    assert (await post_signed(client, body, secret=ROTATED_SECRET)).status_code == 200
    assert await count_rows(engine) == 1


async def test_a_duplicate_delivery_is_acknowledged_and_stored_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(sample("bills.write.unsuccessful")).encode()
    first = await post_signed(client, body, msg_id="msg_dup")
    again = await post_signed(client, body, msg_id="msg_dup")
    assert (first.status_code, first.json()) == (200, {"status": "stored"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert await count_rows(engine) == 1


async def test_each_delivery_is_logged_with_its_type_delivery_id_and_company(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.webhooks.store")
    body = json.dumps(sample("bills.write.unsuccessful")).encode()
    await post_signed(client, body, msg_id="msg_logged")
    await post_signed(client, body, msg_id="msg_logged")
    company = sample("bills.write.unsuccessful")["payload"]["referenceCompany"]["id"]
    logged = [
        (r.getMessage(), r.event_type, r.delivery_id, r.company_id)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "app.webhooks.store"
    ]
    assert logged == [
        ("event stored", "bills.write.unsuccessful", "msg_logged", company),
        ("duplicate delivery ignored", "bills.write.unsuccessful", "msg_logged", company),
    ]


def test_a_burst_sharing_one_commit_is_counted_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.webhooks.store")
    now = datetime.now(UTC)
    read, write = sample("read.completed"), sample("bills.write.successful")
    burst = [
        incoming_event(f"msg_{i}", json.dumps(body).encode(), now)
        for i, body in enumerate([read, read, write, read])
    ]
    stored, duplicate = StoreResult.STORED, StoreResult.DUPLICATE
    log_commit(burst, [stored, stored, stored, duplicate])
    [line] = caplog.records
    assert line.getMessage() == "events stored"
    assert (line.stored, line.duplicates) == (3, 1)  # type: ignore[attr-defined]
    assert line.event_types == {"read.completed": 2, "bills.write.successful": 1}  # type: ignore[attr-defined]


async def test_fifty_simultaneous_deliveries_of_one_event_leave_one_row(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(sample("read.completed")).encode()
    headers = sign(body, msg_id="msg_race")
    responses = await asyncio.gather(
        *(client.post(URL, content=body, headers=headers) for _ in range(50))
    )
    assert all(response.status_code == 200 for response in responses)
    outcomes = sorted(response.json()["status"] for response in responses)
    assert outcomes == ["duplicate"] * 49 + ["stored"]
    assert await count_rows(engine) == 1


async def test_two_receivers_racing_on_one_database_store_once(
    settings: object, engine: AsyncEngine, database_url: str
) -> None:
    """Two processes' writers (separate engines) deliver the same id at once."""
    from app.db import create_engine

    other_engine = create_engine(database_url)
    body = json.dumps(sample("read.completed")).encode()
    headers = sign(body, msg_id="msg_two_receivers")
    try:
        async with (
            running(create_app(make_settings(database_url), engine=engine)) as first,
            running(create_app(make_settings(database_url), engine=other_engine)) as second,
        ):
            responses = await asyncio.gather(
                *(
                    (first if i % 2 else second).post(URL, content=body, headers=headers)
                    for i in range(20)
                )
            )
    finally:
        await other_engine.dispose()
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(r.json()["status"] == "stored" for r in responses) == 1
    assert await count_rows(engine) == 1


def _tampered(body: bytes) -> dict[str, str]:
    headers = sign(body)
    headers["webhook-signature"] = sign(b'{"other": true}')["webhook-signature"]
    return headers


def _bad_header(name: str, value: str) -> dict[str, str]:
    headers = sign(b"{}")
    headers[name] = value
    return headers


def _missing(name: str) -> dict[str, str]:
    headers = sign(b"{}")
    del headers[name]
    return headers


# Built when each test runs: a timestamp made at collection would age into the window.
UNSIGNED_CASES: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "no signature headers": lambda: (b"{}", {"content-type": "application/json"}),
    "missing webhook-id": lambda: (b"{}", _missing("webhook-id")),
    "missing timestamp": lambda: (b"{}", _missing("webhook-timestamp")),
    "missing signature": lambda: (b"{}", _missing("webhook-signature")),
    "signature of another body": lambda: (b"{}", _tampered(b"{}")),
    "signature without comma": lambda: (b"{}", _bad_header("webhook-signature", "v1")),
    "signature with two commas": lambda: (b"{}", _bad_header("webhook-signature", "v1,a,b")),
    "signature not base64": lambda: (
        b"{}",
        _bad_header("webhook-signature", "v1,!!!not-base64!!!"),
    ),
    "unknown signature version": lambda: (b"{}", _bad_header("webhook-signature", "v2,abcd")),
    "empty signature": lambda: (b"{}", _bad_header("webhook-signature", "")),
    "non-numeric timestamp": lambda: (b"{}", _bad_header("webhook-timestamp", "yesterday")),
    "wrong secret": lambda: (b"{}", sign(b"{}", secret=WRONG_SECRET)),
    "stale timestamp": lambda: (
        b"{}",
        sign(b"{}", timestamp=datetime.now(UTC) - timedelta(minutes=6)),
    ),
    "future timestamp": lambda: (
        b"{}",
        sign(b"{}", timestamp=datetime.now(UTC) + timedelta(minutes=6)),
    ),
}


@pytest.mark.parametrize("case", sorted(UNSIGNED_CASES))
async def test_unverifiable_deliveries_get_401_and_store_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, case: str
) -> None:
    body, headers = UNSIGNED_CASES[case]()
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid signature"}
    assert await count_rows(engine) == 0


async def test_a_body_that_is_not_utf8_gets_401(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    headers = sign(b"{}")
    response = await client.post(URL, content=b"\xff\xfe{\x80}", headers=headers)
    assert response.status_code == 401
    assert await count_rows(engine) == 0


async def test_a_body_over_the_limit_gets_413_from_its_declared_length(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    response = await client.post(URL, content=body, headers=sign(body))
    assert response.status_code == 413
    assert await count_rows(engine) == 0


async def test_a_streamed_body_over_the_limit_gets_413_without_reading_it_all(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sent = 0

    async def chunks() -> object:
        nonlocal sent
        for _ in range(1000):  # 16 MiB offered, far past the 64 KiB limit
            sent += 1
            yield b"x" * 16384

    response = await client.post(URL, content=chunks(), headers=sign(b"{}"))  # type: ignore[arg-type]
    assert response.status_code == 413
    assert sent < 1000, "the receiver stopped reading once over the limit"
    assert await count_rows(engine) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "json_invalid"),
        (b'["an", "array"]', "model_type"),
        (b'{"id": "x", "eventType": "read.completed"}', "payload"),
        (
            b'{"id": "x", "eventType": "read.completed", "generatedDate": "2024", "payload": 3}',
            "payload",
        ),
        (b'{"id": "", "eventType": "e", "generatedDate": "2024", "payload": {}}', "id"),
        (b"[" * 5000 + b"]" * 5000, "json"),
    ],
)
async def test_signed_unreadable_bodies_are_kept_aside_and_acknowledged(
    client: httpx.AsyncClient, engine: AsyncEngine, body: bytes, reason: str
) -> None:
    response = await post_signed(client, body)
    assert response.status_code == 200
    assert response.json() == {"status": "unprocessable"}
    [event] = await stored_events(engine)
    assert event.status == EventStatus.UNPROCESSABLE
    assert event.raw_body == body
    assert event.next_attempt_at is None, "never offered to the worker"
    assert event.last_error and event.last_error.startswith("not a Codat envelope")


async def test_wrong_method_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get(URL)).status_code == 405


@pytest.mark.parametrize(
    "unreachable_url",
    ["postgresql://postgres@127.0.0.1:9/nowhere", "sqlite:////proc/no-such-dir/x.db"],
)
async def test_an_unreachable_database_gets_503_so_codat_retries(unreachable_url: str) -> None:
    app = create_app(make_settings(unreachable_url))
    async with running(app) as client:
        body = json.dumps(sample("read.completed")).encode()
        response = await post_signed(client, body)
        assert response.status_code == 503
        assert "retry" in response.json()["error"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
async def test_a_repeated_id_header_cannot_store_one_signed_delivery_twice(
    client: httpx.AsyncClient, engine: AsyncEngine, prefix: str
) -> None:
    """svix checks the last of repeated headers; the id must be the one it checked."""
    body = json.dumps(sample("read.completed")).encode()
    headers = sign(body, prefix=prefix, msg_id="msg_genuine")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    forged = [(f"{prefix}-id", "msg_forged"), *headers.items()]
    replay = await client.post(URL, content=body, headers=forged)
    assert replay.status_code == 401
    assert [e.delivery_id for e in await stored_events(engine)] == ["msg_genuine"]


async def test_a_delivery_id_that_could_never_be_stored_gets_a_clear_400(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps(sample("read.completed")).encode()
    response = await post_signed(client, body, msg_id="msg_" + "x" * 300)
    assert response.status_code == 400
    assert "delivery id" in response.json()["error"]
    assert await count_rows(engine) == 0


async def test_a_forged_svix_id_beside_captured_webhook_headers_stores_nothing_new(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """svix 1.x read `webhook-*` first while the id was taken from `svix-id`: one captured
    delivery with five forged ids was stored five times. svix is now given one map built by
    the delivery id's rule, so the id it checks is the id stored."""
    body = json.dumps(sample("read.completed")).encode()
    captured = sign(body, msg_id="msg_captured")
    assert (await client.post(URL, content=body, headers=captured)).status_code == 200
    for n in range(5):
        forged = {**captured, "svix-id": f"msg_forged_{n}"}
        assert (await client.post(URL, content=body, headers=forged)).status_code == 401
    assert [e.delivery_id for e in await stored_events(engine)] == ["msg_captured"]


async def test_an_empty_svix_header_falls_back_as_the_delivery_id_does(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """An empty `svix-*` header is absent for both the id and the signature check: svix's
    own fallback took the empty value and refused a genuine `webhook-*` delivery."""
    body = json.dumps(sample("read.completed")).encode()
    headers = {
        **sign(body, msg_id="msg_webhook_style"),
        "svix-id": "",
        "svix-timestamp": "",
        "svix-signature": "",
    }
    response = await client.post(URL, content=body, headers=headers)
    assert (response.status_code, response.json()) == (200, {"status": "stored"})
    assert [e.delivery_id for e in await stored_events(engine)] == ["msg_webhook_style"]
