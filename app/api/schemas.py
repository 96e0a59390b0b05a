"""Response models: the contract the platform codes against (stable names, UTC times)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class EventSummary(BaseModel):
    id: int
    delivery_id: str
    event_id: str | None
    event_type: str | None
    company_id: str | None
    connection_id: str | None
    status: str
    attempts: int
    generated_at: datetime | None
    received_at: datetime
    next_attempt_at: datetime | None
    processed_at: datetime | None
    last_error: str | None


class TimelineEntry(BaseModel):
    at: datetime
    what: str


class EventDetail(EventSummary):
    payload: Any = Field(description="The event's payload; null when the body is unreadable")
    raw_body: str | None = Field(description="The body as received, only when unprocessable")
    timeline: list[TimelineEntry]


class EventPage(BaseModel):
    items: list[EventSummary]
    next_cursor: str | None


class ReplayRequest(BaseModel):
    event_type: str | None = None
    status: str | None = None
    company_id: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None


class ReplayResult(BaseModel):
    queued: int


class CompanySummary(BaseModel):
    id: str
    name: str | None
    description: str | None
    status: str
    connection_id: str | None
    connection_status: str | None
    initial_read_status: str | None
    updated_at: datetime


class DataTypeFreshness(BaseModel):
    data_type: str
    connection_id: str | None
    last_read_status: str | None
    last_read_at: datetime | None
    last_read_issues: list[dict[str, Any]]
    last_pulled_at: datetime | None
    record_count: int
    last_refresh_requested_at: datetime | None
    refresh_retries: int = Field(description="Refreshes asked in a row after failed reads")
    overdue: bool = Field(description="Last pulled longer ago than FRESHNESS_MAX_AGE")
    catch_ups: int = Field(description="Reads whose webhook never came, caught up by reconcile")


class CompanyDetail(CompanySummary):
    last_reconciled_at: datetime | None
    write_catch_ups: int
    initial_read_at: datetime | None
    initial_read_failures: list[dict[str, Any]]
    data_types: list[DataTypeFreshness]
    writes: dict[str, int] = Field(description="Write outcomes of this company by status")


class CompanyPage(BaseModel):
    items: list[CompanySummary]
    next_cursor: str | None


class RecordItem(BaseModel):
    id: str
    data_type: str
    connection_id: str | None
    modified_date: datetime | None
    is_deleted: bool
    pulled_at: datetime
    data: dict[str, Any]


class RecordPage(BaseModel):
    items: list[RecordItem]
    next_cursor: str | None


class WriteItem(BaseModel):
    push_operation_key: str
    company_id: str | None
    connection_id: str | None
    data_type: str
    write_type: str | None
    status: str
    record_id: str | None
    attachment_id: str | None
    requested_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    validation: dict[str, Any] | None
    status_code: int | None
    source: str
    updated_at: datetime


class WritePage(BaseModel):
    items: list[WriteItem]
    next_cursor: str | None


class RateLimitStatus(BaseModel):
    paused: bool
    paused_until: datetime | None
    reason: str | None
    daily_quota: int | None
    quota_remaining: int | None
    updated_at: datetime | None


class RefreshRequest(BaseModel):
    dataTypes: list[str] | None = Field(
        default=None, description="Default: every Bill Pay type of the configured variant"
    )


class Queued(BaseModel):
    company_id: str
    queued: list[str] = Field(description="What was queued for the worker")
