"""The tables. The events table is also the work queue (DESIGN.md: no broker)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class EventStatus(enum.StrEnum):
    """Where an event is in its life. `pending` covers first tries and retries alike."""

    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"
    DEAD = "dead"
    UNPROCESSABLE = "unprocessable"


class WebhookEvent(Base):
    """One delivery from Codat, stored once per delivery id, exactly as received."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(255))
    company_id: Mapped[str | None] = mapped_column(String(255))
    connection_id: Mapped[str | None] = mapped_column(String(255))
    generated_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]
    # The receive span's context (W3C traceparent) when tracing is on: the worker's span
    # for the event continues its trace (app/tracing.py).
    traceparent: Mapped[str | None] = mapped_column(String(55))

    __table_args__ = (
        Index("ix_webhook_events_due", "status", "next_attempt_at"),
        Index("ix_webhook_events_company_id_id", "company_id", "id"),
        Index("ix_webhook_events_event_type_id", "event_type", "id"),
        Index("ix_webhook_events_status_id", "status", "id"),
    )


JSONType = JSON().with_variant(JSONB(), "postgresql")


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"


class Job(Base):
    """Work for Codat that events (or schedules) ask for, collapsed by `key`.

    One row per key, re-armed when asked again: two waiting pulls of the same company and
    data type are one row, and a row is only ever claimed by one worker at a time.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    company_id: Mapped[str | None] = mapped_column(String(255))
    data_type: Mapped[str | None] = mapped_column(String(64))
    connection_id: Mapped[str | None] = mapped_column(String(255))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(255))
    # Asked for again while running: run once more when this run ends.
    rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # The context of the span that asked for this run (an event's, when tracing is on).
    traceparent: Mapped[str | None] = mapped_column(String(55))

    __table_args__ = (Index("ix_jobs_due", "status", "next_attempt_at"),)


class Company(Base):
    """A Codat company as the events and pulls have shown it."""

    __tablename__ = "companies"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="active")
    status_event_at: Mapped[datetime | None]
    connection_id: Mapped[str | None] = mapped_column(String(255))
    connection_status: Mapped[str | None] = mapped_column(String(64))
    connection_event_at: Mapped[datetime | None]
    # Blocked until linked again: no refresh, pull or reconcile (a disconnected, failed,
    # deleted or deauthorised connection, or a read that ended in AuthError).
    needs_reauth: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What blocked it: the connection event, Codat's connection status or `AuthError`.
    reauth_reason: Mapped[str | None] = mapped_column(String(64))
    # Where the SMB authorises again: the connection's `linkUrl` or the company's `redirect`.
    link_url: Mapped[str | None] = mapped_column(String(2048))
    # Codat's `referenceCompany.tags` (where platforms keep their own customer id).
    tags: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    # When company.deleted was processed: `prune` removes its local copy after retention.
    deleted_at: Mapped[datetime | None]
    initial_read_status: Mapped[str | None] = mapped_column(String(32))
    initial_read_failures: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    initial_read_at: Mapped[datetime | None]
    last_reconciled_at: Mapped[datetime | None]
    last_push_reconciled_at: Mapped[datetime | None]
    # Write outcomes whose webhook never came, found by reconcile.
    write_catch_ups: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        # The sweep's reconcile share: the companies reconciled longest ago (bench.scale).
        Index("ix_companies_last_reconciled_at_id", "last_reconciled_at", "id"),
        # Companies by tag (`tags @> {...}` on PostgreSQL, app/api/queries.tag_clauses).
        Index(
            "ix_companies_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        ),
    )


class DataTypeState(Base):
    """Freshness of one company's data type: the last read Codat reported, our last pull."""

    __tablename__ = "data_type_states"

    company_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    data_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str | None] = mapped_column(String(255))
    last_read_status: Mapped[str | None] = mapped_column(String(64))
    last_read_at: Mapped[datetime | None]
    last_read_issues: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    last_pulled_at: Mapped[datetime | None]
    # The newest `modifiedDate` pulled: the next pull asks only for what is newer.
    pull_watermark: Mapped[datetime | None]
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    last_refresh_requested_at: Mapped[datetime | None]
    # Refreshes asked for in a row because reads did not complete; reset by a complete read.
    refresh_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Reads whose webhook never came, found and pulled by reconcile.
    catch_ups: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why the last pull stopped short (Codat's paging would not lead on); cleared by a
    # pull that ends well.
    last_pull_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]

    # The sweep's overdue data: a range of old pulls, not a scan of every type's state.
    __table_args__ = (Index("ix_data_type_states_last_pulled_at", "last_pulled_at"),)


class Record(Base):
    """The local copy: one row per Codat record, the record itself kept as JSON."""

    __tablename__ = "records"

    company_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    data_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    connection_id: Mapped[str | None] = mapped_column(String(255))
    modified_date: Mapped[datetime | None]
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    pulled_at: Mapped[datetime]

    # The local copy's pages, in order from any cursor (app/api/queries.list_records).
    __table_args__ = (
        Index(
            "ix_records_company_type_modified_id",
            "company_id",
            "data_type",
            "modified_date",
            "record_id",
        ),
    )


class WriteOutcome(Base):
    """The result of one write to the SMB's accounting software, by push operation key."""

    __tablename__ = "write_outcomes"

    push_operation_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    company_id: Mapped[str | None] = mapped_column(String(255))
    connection_id: Mapped[str | None] = mapped_column(String(255))
    data_type: Mapped[str] = mapped_column(String(64))
    write_type: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[str | None] = mapped_column(String(255))
    attachment_id: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status_code: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32), default="webhook")
    event_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_write_outcomes_company_id_status", "company_id", "status"),)


class RateLimitState(Base):
    """The one row saying whether calls to Codat are paused, shared by every process."""

    __tablename__ = "rate_limit_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    paused_until: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(64))
    daily_quota: Mapped[int | None] = mapped_column(Integer)
    quota_remaining: Mapped[int | None] = mapped_column(Integer)
    # Codat's X-Rate-Limit-Reset, and when its headers were last read into the quota.
    quota_reset_at: Mapped[datetime | None]
    quota_read_at: Mapped[datetime | None]
    event_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # What the freshness sweep spent, by the hour it began ("2026-11-30T04:00:00+00:00"),
    # for the last 24 hours only: its share is checked over a rolling window.
    sweep_spent: Mapped[dict[str, int] | None] = mapped_column(JSONType)


class Change(Base):
    """What changed, written in the transaction that changed it (the outbox).

    `seq` orders changes within one database; `tx` is PostgreSQL's transaction id, so the
    feed only hands out changes whose transaction and every earlier one has ended (a
    smaller `seq` may commit after a larger one). SQLite commits one writer at a time and
    keeps `tx` at 0.
    """

    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tx: Mapped[int] = mapped_column(BigInteger, server_default="0")
    change_type: Mapped[str] = mapped_column(String(64))
    company_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The span that made the change (W3C), when tracing is on: its notifications continue
    # that trace, so one trace runs from the webhook to the platform's endpoint.
    traceparent: Mapped[str | None] = mapped_column(String(55))

    __table_args__ = (
        Index("ix_changes_tx_seq", "tx", "seq"),
        Index("ix_changes_created_at", "created_at"),
    )


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DELIVERED = "delivered"
    DEAD = "dead"


class Delivery(Base):
    """One change to send to one endpoint: a work item of its own queue, so that an
    endpoint that is down makes its deliveries wait there, never the events."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    change_seq: Mapped[int] = mapped_column(BigInteger)
    change_id: Mapped[str] = mapped_column(String(40))
    change_type: Mapped[str] = mapped_column(String(64))
    company_id: Mapped[str | None] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_status_created_at", "status", "created_at"),
        Index("ix_deliveries_change_seq", "change_seq"),
    )
