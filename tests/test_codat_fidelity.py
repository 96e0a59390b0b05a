"""True to Codat (issue 15): Bill Pay's data types are the get-started table's, and each
read status is handled as what it is (terminal or transient). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.queries import get_company
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.codat.statuses import COMPLETE, IN_PROGRESS, TERMINAL, TRANSIENT, status_kind
from app.db import session_factory
from app.models import Change, Company
from app.processing.context import Context
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat
from tests.conftest import Clock
from tests.support import oas
from tests.support.flow import COMPANY, CONNECTION, deliver, one, read_event

QUEUE = "/data/queue/"


def codats_read_statuses() -> list[str]:
    """The dataset status enum of Codat's OpenAPI (`PullOperation.status`)."""
    schema = oas.load_spec(oas.PLATFORM)["components"]["schemas"]["PullOperation"]
    enum: list[str] = schema["properties"]["status"]["enum"]
    return enum


def test_each_variant_needs_exactly_the_types_of_codats_get_started_table() -> None:
    assert BILL_PAY_DATA_TYPES["async"] == (
        "bankAccounts",
        "bills",
        "billCreditNotes",
        "billPayments",
        "chartOfAccounts",
        "company",
        "paymentMethods",
        "suppliers",
        "taxRates",
        "trackingCategories",
    )
    assert BILL_PAY_DATA_TYPES["sync"] == (
        "bankAccounts",
        "bills",
        "billPayments",
        "chartOfAccounts",
        "company",
        "paymentMethods",
        "suppliers",
    )


def test_every_status_in_codats_enum_is_in_exactly_one_set() -> None:
    sets = [{COMPLETE}, IN_PROGRESS, TERMINAL, TRANSIENT]
    statuses = codats_read_statuses()
    assert len(statuses) == 21
    for status in statuses:
        assert sum(status in s for s in sets) == 1, status
    assert set().union(*sets) == set(statuses), "a set names a word Codat does not use"
    assert {"NotSupported", "AuthError", "PermissionsError", "PrerequisiteNotMet"} == TERMINAL
    assert status_kind("SomethingNew") == "transient", "an undocumented word is retried"


async def test_an_initial_read_of_the_sync_list_is_complete_under_sync(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    fake_codat: FakeCodat,
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(bill_pay_variant="sync")
    fake_codat.add_company(COMPANY, CONNECTION)
    types = BILL_PAY_DATA_TYPES["sync"]
    assert "taxRates" not in types, "a sync setup never fetches taxRates"
    for data_type in types:
        fake_codat.complete_sync(COMPANY, data_type)
    await deliver(
        client, read_event("read.completed.initial", [(t, "Complete", False) for t in types])
    )
    await Worker(ctx).run_until_idle()
    company = await one(engine, Company, Company.id == COMPANY)
    assert (company.initial_read_status, company.initial_read_failures) == ("complete", [])


async def test_the_sync_list_is_incomplete_under_async(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    types = BILL_PAY_DATA_TYPES["sync"]
    await deliver(
        client, read_event("read.completed.initial", [(t, "Complete", False) for t in types])
    )
    await Worker(ctx).run_until_idle()
    company = await one(engine, Company, Company.id == COMPANY)
    assert company.initial_read_status == "incomplete"
    assert {f["dataType"] for f in company.initial_read_failures} == {
        "billCreditNotes",
        "taxRates",
        "trackingCategories",
    }


async def refreshes_after_a_read_ending(
    status: str, client: httpx.AsyncClient, ctx: Context, fake: FakeCodat, clock: Clock
) -> int:
    """Deliver a read of paymentMethods ending in `status`; refreshes asked within an hour."""
    fake.add_company(COMPANY, CONNECTION)
    await deliver(client, read_event("read.completed", [("paymentMethods", status, False)]))
    await Worker(ctx).run_until_idle()
    for _ in range(4):
        clock.advance(ctx.settings.refresh_retry_base_seconds + 1)
        await Worker(ctx).run_until_idle()
    return len([c for c in fake.calls_to(QUEUE) if c.method == "POST"])


@pytest.mark.parametrize("status", sorted(TERMINAL))
async def test_a_terminal_status_is_recorded_shown_and_never_refreshed(
    status: str,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    assert await refreshes_after_a_read_ending(status, client, ctx, fake_codat, clock) == 0
    async with session_factory(engine)() as session:
        detail = await get_company(session, COMPANY, now=clock.now, max_age=timedelta(days=1))
    [state] = detail.data_types
    assert (state.last_read_status, state.read_unavailable) == (status, True)
    assert state.last_read_issues == [{"type": "error", "message": "it broke"}]
    assert not state.overdue, "the sweep must not spend calls on it either"
    [change] = await changes_of(engine, "data_type.unavailable")
    assert change.data["status"] == status
    assert change.data["needsReauth"] is (status == "AuthError")
    assert change.data["issues"] == [{"type": "error", "message": "it broke"}]


@pytest.mark.parametrize("status", sorted(TRANSIENT))
async def test_a_transient_status_is_refreshed(
    status: str,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    assert await refreshes_after_a_read_ending(status, client, ctx, fake_codat, clock) == 1
    assert await changes_of(engine, "data_type.unavailable") == []


@pytest.mark.parametrize("status", sorted(IN_PROGRESS))
def test_a_read_still_on_its_way_is_waited_for(status: str) -> None:
    assert status_kind(status) == "in_progress"


async def changes_of(engine: AsyncEngine, change_type: str) -> list[Change]:
    async with engine.connect() as connection:
        query = select(Change).where(Change.change_type == change_type).order_by(Change.seq)
        return [Change(**row._mapping) for row in await connection.execute(query)]
