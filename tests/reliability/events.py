"""Codat events as Codat sends them (the shapes of the samples in ../shared/samples)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "eventType": event_type,
        "generatedDate": now_iso(),
        "payload": payload,
    }


def company_ref(company_id: str) -> dict[str, Any]:
    return {"id": company_id, "name": f"Company {company_id[:8]}", "description": "reliability"}


def read_completed(
    company_id: str,
    connection_id: str,
    modified: Mapping[str, bool],
    *,
    initial: bool = False,
) -> dict[str, Any]:
    """`read.completed(.initial)` with each data type Complete; `modified` says which
    have `recordsModified` (the ones the service pulls)."""
    return envelope(
        "read.completed.initial" if initial else "read.completed",
        {
            "referenceCompany": company_ref(company_id),
            "modifiedFromDate": None if initial else now_iso(),
            "dataTypes": [
                {
                    "connectionId": connection_id,
                    "dataType": data_type,
                    "recordsModified": changed,
                    "status": "Complete",
                    "issues": [],
                }
                for data_type, changed in modified.items()
            ],
        },
    )


def write_event(
    company_id: str, connection_id: str, push_key: str, *, successful: bool = True
) -> dict[str, Any]:
    outcome = "successful" if successful else "unsuccessful"
    return envelope(
        f"bills.write.{outcome}",
        {
            "id": push_key,
            "type": "Create",
            "referenceCompany": company_ref(company_id),
            "connectionId": connection_id,
            "requestedOnDate": now_iso(),
            "completedOnDate": now_iso(),
            "status": "Success" if successful else "Failed",
            "record": {"id": f"bill-{push_key}"} if successful else None,
            "attachmentId": None,
        },
    )


def connection_event(
    company_id: str, connection_id: str, *, connected: bool, event_type: str | None = None
) -> dict[str, Any]:
    status = "Linked" if connected else "Deauthorized"
    return envelope(
        event_type or ("connection.connected" if connected else "connection.disconnected"),
        {
            "referenceCompany": company_ref(company_id),
            "connection": {
                "id": connection_id,
                "integrationKey": "gbol",
                "sourceType": "Accounting",
                "platformName": "QuickBooks Online",
                "status": status,
                "dataConnectionErrors": [],
            },
        },
    )


def unknown_event(company_id: str) -> dict[str, Any]:
    """A type the service does not handle: stored and marked ignored."""
    return envelope("expenses.sync.completed", {"referenceCompany": company_ref(company_id)})


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def new_delivery_id() -> str:
    return f"msg_{uuid.uuid4().hex}"
