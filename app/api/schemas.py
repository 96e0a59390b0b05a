"""Response models: the contract the platform codes against (stable names, UTC times).

Every field says what it is: /docs is where a newcomer learns the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from app.api.types import IsoDateTime, Text
from app.models import EventStatus

NEXT_CURSOR = "Pass as `cursor` to get the next page; null on the last page"


class EventSummary(BaseModel):
    id: int = Field(description="The event's id in this service (newer events have larger ids)")
    delivery_id: str = Field(description="Svix's delivery id (`webhook-id` header), unique")
    event_id: str | None = Field(description="Codat's event id (the body's `id`)")
    event_type: str | None = Field(description="Codat's `eventType`, e.g. `read.completed`")
    company_id: str | None = Field(description="The Codat company the event is about")
    connection_id: str | None = Field(description="The Codat connection, when the event has one")
    status: EventStatus = Field(
        description="pending (waiting or retrying), processing, processed, ignored (a type "
        "this service does not act on), dead (gave up after WORKER_MAX_ATTEMPTS), "
        "unprocessable (signed, but not a readable Codat event; kept, never processed)"
    )
    attempts: int = Field(description="Times the worker has tried it")
    generated_at: datetime | None = Field(description="When Codat generated it (`generatedDate`)")
    received_at: datetime = Field(description="When this service stored it")
    next_attempt_at: datetime | None = Field(description="When the worker will next try it")
    processed_at: datetime | None = Field(description="When processing finished")
    last_error: str | None = Field(description="Why the last attempt failed (class and reason)")


class TimelineEntry(BaseModel):
    at: datetime = Field(description="When it happened")
    what: str = Field(description="What happened")


class EventDetail(EventSummary):
    payload: Any = Field(description="The event's payload; null when the body is unreadable")
    raw_body: str | None = Field(description="The body as received, only when unprocessable")
    timeline: list[TimelineEntry] = Field(description="Generated, received, attempted, finished")


class EventPage(BaseModel):
    items: list[EventSummary] = Field(description="Newest first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class ReplayRequest(BaseModel):
    """Which events to queue again; at least one filter, every one must match."""

    event_type: Text | None = Field(default=None, description="Codat's `eventType`, exactly")
    status: EventStatus | None = Field(default=None, description="The event's status")
    company_id: Text | None = Field(default=None, description="The Codat company id")
    received_after: IsoDateTime | None = Field(
        default=None, description="Received at or after this ISO 8601 time (UTC if no offset)"
    )
    received_before: IsoDateTime | None = Field(
        default=None, description="Received before this ISO 8601 time (UTC if no offset)"
    )


class ReplayResult(BaseModel):
    queued: int = Field(description="Events queued again (unprocessable ones never are)")


class CompanySummary(BaseModel):
    id: str = Field(description="Codat's company id")
    name: str | None = Field(description="The company's name in Codat")
    description: str | None = Field(description="The company's description in Codat")
    status: str = Field(description="`active`, or `deleted` after a company.deleted event")
    connection_id: str | None = Field(description="The accounting connection last seen")
    connection_status: str | None = Field(
        description="Codat's status of that connection, e.g. `Linked`, `Deauthorized`"
    )
    needs_reauth: bool = Field(
        description="The connection must be linked again (disconnected, failed, deleted, "
        "deauthorised, or a read ended in `AuthError`): no refresh, pull or reconcile is "
        "sent for the company until it is"
    )
    reauth_reason: str | None = Field(
        description="What made it need re-linking, e.g. `connection.disconnected`, "
        "`Deauthorized`, `AuthError`; null when it does not"
    )
    link_url: str | None = Field(
        description="Where the SMB links the connection again (Codat's `linkUrl` or the "
        "company's `redirect`), when Codat gave one"
    )
    tags: dict[str, str] = Field(
        description="Codat's `referenceCompany.tags` (e.g. the platform's own customer id)"
    )
    deleted_at: datetime | None = Field(
        description="When company.deleted came; `prune` removes its local copy after the "
        "retention period"
    )
    initial_read_status: str | None = Field(
        description="`complete` or `incomplete` once read.completed.initial came; else null"
    )
    updated_at: datetime = Field(description="When this service last changed the company")

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags_is_empty(cls, value: object) -> object:
        return {} if value is None else value


class DataTypeFreshness(BaseModel):
    data_type: str = Field(description="Codat's data type, e.g. `bills`")
    connection_id: str | None = Field(description="The connection its data came from")
    last_read_status: str | None = Field(
        description="Codat's status of its last read, e.g. `Complete`, `FetchError`"
    )
    last_read_at: datetime | None = Field(description="When Codat reported that read")
    last_read_issues: list[dict[str, Any]] = Field(description="Codat's issues of that read")
    read_unavailable: bool = Field(
        description="That status is one no refresh can fix (`NotSupported`, `AuthError`, "
        "`PermissionsError`, `PrerequisiteNotMet`): not refreshed until a later read clears it; "
        "`AuthError` means the connection must be linked again"
    )
    last_pulled_at: datetime | None = Field(description="When this service last pulled it")
    record_count: int = Field(description="Records in the local copy, deleted ones included")
    last_refresh_requested_at: datetime | None = Field(
        description="When this service last asked Codat to read it again"
    )
    refresh_retries: int = Field(description="Refreshes asked in a row after failed reads")
    overdue: bool = Field(description="Last pulled longer ago than FRESHNESS_MAX_AGE")
    catch_ups: int = Field(description="Reads whose webhook never came, caught up by reconcile")
    last_pull_error: str | None = Field(
        description="Why the last pull stopped short after the pages it saved (Codat's next "
        "page link did not advance, or pointed at another company or data type); null once a "
        "pull ends well"
    )


class CompanyDetail(CompanySummary):
    last_reconciled_at: datetime | None = Field(
        description="When reconcile last compared Codat's data status with what was seen"
    )
    write_catch_ups: int = Field(description="Writes whose webhook never came, found by reconcile")
    initial_read_at: datetime | None = Field(description="When the initial read was reported")
    initial_read_failures: list[dict[str, Any]] = Field(
        description="Bill Pay data types the initial read did not complete, with Codat's status "
        "and issues (`Missing` when Codat did not report the type)"
    )
    data_types: list[DataTypeFreshness] = Field(description="Freshness of each data type")
    writes: dict[str, int] = Field(description="Write outcomes of this company by status")


class CompanyPage(BaseModel):
    items: list[CompanySummary] = Field(description="By company id")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class RecordItem(BaseModel):
    id: str = Field(description="The record's id in Codat")
    data_type: str = Field(description="Codat's data type")
    connection_id: str | None = Field(description="The connection it came from")
    modified_date: datetime | None = Field(description="Codat's `modifiedDate` of the record")
    is_deleted: bool = Field(description="Deleted in the accounting software (kept, marked)")
    pulled_at: datetime = Field(description="When this service last pulled it")
    data: dict[str, Any] = Field(description="The record as Codat returned it")


class RecordPage(BaseModel):
    items: list[RecordItem] = Field(description="Oldest change first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class WriteItem(BaseModel):
    push_operation_key: str = Field(description="Codat's push operation key, unique")
    company_id: str | None = Field(description="The Codat company written to")
    connection_id: str | None = Field(description="The connection written through")
    data_type: str = Field(description="What was written, e.g. `bills`, `billPayments`")
    write_type: str | None = Field(
        description="Create, Update, Delete or UploadAttachment (null when found by reconcile)"
    )
    status: str = Field(description="Codat's status: Pending, Success, Failed or TimedOut")
    record_id: str | None = Field(description="The record's id in the accounting software")
    attachment_id: str | None = Field(description="The attachment's id, for uploads")
    requested_at: datetime | None = Field(description="When the write was requested")
    completed_at: datetime | None = Field(description="When Codat finished it")
    error_message: str | None = Field(description="Codat's error message of a failed write")
    validation: dict[str, Any] | None = Field(description="Codat's validation errors and warnings")
    status_code: int | None = Field(description="Codat's HTTP status of a failed write")
    source: str = Field(description="`webhook`, or `reconcile` when its webhook never came")
    updated_at: datetime = Field(description="When this service last changed the outcome")


class WritePage(BaseModel):
    items: list[WriteItem] = Field(description="Newest change first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class RateLimitStatus(BaseModel):
    paused: bool = Field(description="Calls to Codat are paused now")
    paused_until: datetime | None = Field(description="When the pause ends (or ended)")
    reason: str | None = Field(
        description="What set the pause or lifted it: `rateLimit.reached`, `rateLimit.reset`, "
        "`429` (a Retry-After from Codat), or `resumed by an operator`"
    )
    daily_quota: int | None = Field(description="Codat's daily quota, when it was told")
    quota_remaining: int | None = Field(description="Calls left in the quota, when it was told")
    quota_reset_at: datetime | None = Field(
        description="When Codat's quota resets, from its `X-Rate-Limit-Reset` header"
    )
    quota_read_at: datetime | None = Field(
        description="When the quota was last read from Codat's `X-Rate-Limit-*` headers (null: "
        "only from rate-limit webhooks or the setting)"
    )
    updated_at: datetime | None = Field(description="When this state last changed")


class ResumeResult(BaseModel):
    resumed: bool = Field(description="A pause was in force and is lifted; false: none was")
    paused_until: datetime | None = Field(description="When the lifted pause would have ended")
    reason: str | None = Field(description="What had set the lifted pause")


class RefreshRequest(BaseModel):
    dataTypes: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Codat data types to read again; default: every Bill Pay type of the "
        "configured variant",
    )


class Queued(BaseModel):
    company_id: str = Field(description="The company the work is for")
    queued: list[str] = Field(description="What was queued for the worker")
