"""Recording a change in the transaction of the state change it describes.

Nothing here commits: the caller's transaction does, so a change is announced exactly
when its state change lands, and a rollback takes both away. Each endpoint that wants
the change gets a delivery row in the same transaction (it can then never be missed).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert

from app import tracing
from app.config import NotifyEndpoint
from app.db import Executor
from app.models import Change, Delivery, DeliveryStatus

COMPANY_READY = "company.ready"
COMPANY_INCOMPLETE = "company.incomplete"
COMPANY_NEEDS_REAUTH = "company.needs_reauth"
COMPANY_RECONNECTED = "company.reconnected"
COMPANY_DELETED = "company.deleted"
DATA_CHANGED = "data.changed"
DATA_TYPE_UNAVAILABLE = "data_type.unavailable"
BILL_WRITE_SUCCEEDED = "bill_write.succeeded"
BILL_WRITE_FAILED = "bill_write.failed"
WRITE_SUCCEEDED = "write.succeeded"
WRITE_FAILED = "write.failed"
RATE_LIMIT_PAUSED = "rate_limit.paused"
RATE_LIMIT_RESUMED = "rate_limit.resumed"
WEBHOOKS_MISSED = "webhooks.missed"

CHANGE_TYPES = (
    COMPANY_READY,
    COMPANY_INCOMPLETE,
    COMPANY_NEEDS_REAUTH,
    COMPANY_RECONNECTED,
    COMPANY_DELETED,
    DATA_CHANGED,
    DATA_TYPE_UNAVAILABLE,
    BILL_WRITE_SUCCEEDED,
    BILL_WRITE_FAILED,
    WRITE_SUCCEEDED,
    WRITE_FAILED,
    RATE_LIMIT_PAUSED,
    RATE_LIMIT_RESUMED,
    WEBHOOKS_MISSED,
)


# Built once, on the tables rather than the ORM classes: a change is recorded with
# every state change, and the ORM's bulk-insert path cost as much as the INSERT itself
# (py-spy on bench.process --notify all).
_CHANGES = cast(Table, Change.__table__)
_INSERT_CHANGE = insert(_CHANGES).returning(_CHANGES.c.seq)
_INSERT_DELIVERY = insert(cast(Table, Delivery.__table__))


def new_change_id(now: datetime) -> str:
    """`chg_` + milliseconds (hex, fixed width) + randomness: sorts by creation time,
    unique across processes without asking the database."""
    return f"chg_{int(now.timestamp() * 1000):012x}{secrets.token_hex(8)}"


def write_change_type(data_type: str, succeeded: bool) -> str:
    """Bills have their own types; other data types' writes share one, with `dataType`."""
    if data_type == "bills":
        return BILL_WRITE_SUCCEEDED if succeeded else BILL_WRITE_FAILED
    return WRITE_SUCCEEDED if succeeded else WRITE_FAILED


def write_change_body(outcome: dict[str, Any], succeeded: bool) -> dict[str, Any]:
    """What a write change says: the write, and Codat's error and validation if it failed."""
    body = {
        "pushOperationKey": outcome["push_operation_key"],
        "dataType": outcome["data_type"],
        "status": outcome["status"],
        "recordId": outcome.get("record_id"),
    }
    if not succeeded:
        body |= {
            "errorMessage": outcome.get("error_message"),
            "validation": outcome.get("validation"),
        }
    return body


async def record_change(
    session: Executor,
    change_type: str,
    *,
    company_id: str | None,
    data: dict[str, Any],
    now: datetime,
    endpoints: Sequence[NotifyEndpoint] = (),
) -> str:
    """Add the change (and its deliveries) to the caller's transaction; its id."""
    change_id = new_change_id(now)
    body = {"companyId": company_id, **data} if company_id else dict(data)
    values = {
        "id": change_id,
        "change_type": change_type,
        "company_id": company_id,
        "created_at": now,
        "data": body,
        "traceparent": tracing.traceparent(),
    }
    seq = (await session.execute(_INSERT_CHANGE, values)).scalar_one()
    deliveries = [
        {
            "change_seq": seq,
            "change_id": change_id,
            "change_type": change_type,
            "company_id": company_id,
            "endpoint": endpoint.url,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for endpoint in endpoints
        if endpoint.wants(change_type)
    ]
    if deliveries:
        await session.execute(_INSERT_DELIVERY, deliveries)
    return change_id
