"""Pulling one company's data type from Codat's cache into the local copy."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app import tracing
from app.changes.record import DATA_CHANGED
from app.codat.errors import CodatPagingError
from app.codat.records import CachedRecord
from app.models import DataTypeState, Job
from app.processing.context import Context, InvalidJob
from app.processing.lifecycle import skipped_for_lifecycle
from app.processing.state import RecordCounts, finish_pull, record_pull_error, save_records

log = logging.getLogger(__name__)
PULL = "pull"


def pull_key(company_id: str, data_type: str) -> str:
    return f"{PULL}:{company_id}:{data_type}"


def record_row(record: CachedRecord, fallback_id: str) -> dict[str, Any] | None:
    """The columns we index of one record of Codat's cache."""
    record_id = record.id or fallback_id
    if not record_id:
        return None
    return {
        "record_id": record_id[:255],
        "modified_date": record.modified_date,
        "is_deleted": record.is_deleted,
        "data": record.data,
    }


async def run_pull(ctx: Context, job: Job) -> None:
    """Everything modified since the last pull, page by page; the watermark moves at the end.

    A worker killed halfway leaves pages stored and the watermark where it was: the
    next try fetches those pages again and the upserts make that harmless.
    """
    company_id, data_type = job.company_id, job.data_type
    if not company_id or not data_type:
        raise InvalidJob(f"pull job {job.key} has no company or data type")
    async with ctx.sessions() as session:
        if await skipped_for_lifecycle(session, job):
            return
        state = await session.get(DataTypeState, (company_id, data_type))
    since = state.pull_watermark if state else None
    connection_id = job.connection_id or (state.connection_id if state else None)
    started_at = ctx.clock()
    watermark: datetime | None = since
    pages = records = 0
    counts = RecordCounts()
    # The company profile is one object without an id of its own.
    fallback_id = company_id if data_type == "company" else ""
    paging_error: CodatPagingError | None = None
    pulled = ctx.codat.pages(
        company_id, data_type, connection_id=connection_id, modified_since=since
    )
    while True:
        try:
            page = await anext(pulled)
        except StopAsyncIteration:
            break
        except CodatPagingError as exc:
            # Stop here, keep what was saved, say why; a retry would only loop again.
            paging_error = exc
            break
        rows = [row for record in page if (row := record_row(record, fallback_id)) is not None]
        page_span = {"codat.page": pages + 1, "codat.records": len(rows)}
        with tracing.span(f"pull page {data_type}", page_span):
            async with ctx.sessions.begin() as session:
                counts.add(
                    await save_records(
                        session, company_id, data_type, connection_id, rows, ctx.clock()
                    )
                )
        for row in rows:
            modified = row["modified_date"]
            if modified is not None and (watermark is None or modified > watermark):
                watermark = modified
        pages += 1
        records += len(rows)
        # Page by page: this page is freed before the next one is fetched and parsed.
        del page, rows
    async with ctx.sessions.begin() as session:
        if paging_error is None:
            await finish_pull(
                session,
                company_id,
                data_type,
                connection_id=connection_id,
                watermark=watermark,
                started_at=started_at,
            )
        else:
            await record_pull_error(session, company_id, data_type, str(paging_error), ctx.clock())
            log.error(
                "pull stopped: Codat's paging does not lead on",
                extra={
                    "company_id": company_id,
                    "data_type": data_type,
                    "pages": pages,
                    "error": str(paging_error),
                },
            )
        # Counted over this run's pages; pages stored by a try that died before this
        # commit were counted by nobody (their records are in the copy all the same).
        if counts:
            await ctx.record_change(
                session,
                DATA_CHANGED,
                company_id,
                {
                    "dataType": data_type,
                    "created": counts.created,
                    "updated": counts.updated,
                    "deleted": counts.deleted,
                    "pulledAt": started_at.isoformat(),
                },
            )
    log.info(
        "pulled",
        extra={
            "company_id": company_id,
            "data_type": data_type,
            "pages": pages,
            "records": records,
        },
    )
