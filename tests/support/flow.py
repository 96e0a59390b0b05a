"""What the end-to-end tests share: a company on the fake Codat, events to deliver, and
ways to read back what the service stored."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Record, WebhookEvent
from app.sandbox.fake_codat import FakeCodat, make_bill, make_supplier
from tests.conftest import sample
from tests.support.signing import sign

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"


def codat_id(kind: str, number: int = 0) -> str:
    """An id of Codat's shape (a UUID, app/codat/ids.py), the same for the same kind and
    number: `codat_id("company", 3)`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}-{number}"))


def read_event(
    event_type: str,
    data_types: list[tuple[str, str, bool]],
    *,
    generated: str = "2026-05-03T10:00:23Z",
) -> dict[str, Any]:
    body = copy.deepcopy(sample("read.completed"))
    body["id"] = str(uuid.uuid4())
    body["eventType"] = event_type
    body["generatedDate"] = generated
    body["payload"]["referenceCompany"]["id"] = COMPANY
    body["payload"]["dataTypes"] = [
        {
            "connectionId": CONNECTION,
            "dataType": data_type,
            "status": status,
            "recordsModified": modified,
            "issues": [] if status == "Complete" else [{"type": "error", "message": "it broke"}],
        }
        for data_type, status, modified in data_types
    ]
    return body


async def deliver(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    response = await client.post("/webhooks/codat", content=raw, headers=sign(raw))
    assert response.status_code == 200, response.text


async def local_records(engine: AsyncEngine, data_type: str) -> dict[str, Record]:
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Record).where(Record.company_id == COMPANY, Record.data_type == data_type)
            )
        ).all()
    return {row.record_id: Record(**row._mapping) for row in rows}


async def one(engine: AsyncEngine, model: Any, *where: Any) -> Any:
    async with engine.connect() as connection:
        row = (await connection.execute(select(model).where(*where))).one()
    return model(**row._mapping)


async def events(engine: AsyncEngine) -> list[WebhookEvent]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(WebhookEvent).order_by(WebhookEvent.id))).all()
    return [WebhookEvent(**row._mapping) for row in rows]


async def until_called(fake: FakeCodat, path: str, within: float = 5.0) -> None:
    """Until the fake has seen a call to `path`: the worker is inside that call."""
    for _ in range(int(within / 0.02)):
        if fake.calls_to(path):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no call to {path} within {within} s")


def seed_company(fake: FakeCodat, bills: int = 5) -> None:
    fake.add_company(COMPANY, CONNECTION, name="Toft stores")
    start = fake.now() - timedelta(hours=1)
    for i in range(bills):
        fake.put_record(
            COMPANY, "bills", make_bill(f"bill-{i}"), modified=start + timedelta(seconds=i)
        )
    fake.put_record(COMPANY, "suppliers", make_supplier("sup-1"))
    for data_type in ("bills", "suppliers", "company"):
        fake.complete_sync(COMPANY, data_type)


async def assert_local_copy_equals_fake(
    engine: AsyncEngine, fake: FakeCodat, data_type: str
) -> None:
    local = await local_records(engine, data_type)
    remote = {r["id"]: r for r in fake.records(COMPANY, data_type)}
    assert set(local) == set(remote)
    for record_id, record in remote.items():
        assert local[record_id].data == record
        assert local[record_id].is_deleted == record["metadata"]["isDeleted"]
