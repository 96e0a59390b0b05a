"""Time from the future (issue 16): a signed event dated 9999 must not freeze the state it
writes nor pause every call to Codat for good, and an operator can lift a pause by hand
(one command: API, CLI). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.codat.client import retry_after_seconds
from app.codat.gate import MAX_PAUSE
from app.config import Settings
from app.db import session_factory
from app.models import Change, DataTypeState, Job, RateLimitState
from app.processing import commands
from app.processing.context import Context
from app.processing.state import RESUMED_BY_OPERATOR
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat
from app.webhooks.envelope import MAX_CLOCK_SKEW
from app.webhooks.route import incoming_event
from app.webhooks.store import EventWriter
from tests.conftest import Clock, make_settings, sample
from tests.support.flow import deliver, one, read_event, seed_company

TOKEN = "future-dates-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAR_FUTURE = "9999-12-31T00:00:00Z"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=TOKEN)


async def store(engine: AsyncEngine, body: dict[str, Any], received_at: datetime) -> None:
    """Store a signed body as the receiver does, received at a chosen time."""
    writer = EventWriter(engine)
    writer.start()
    try:
        raw = json.dumps(body).encode()
        await writer.store(incoming_event(f"msg_{body['id']}", raw, received_at))
    finally:
        await writer.close()


# -- generatedDate ------------------------------------------------------------------------


async def test_an_event_dated_9999_is_ordered_as_received_and_freezes_nothing(
    engine: AsyncEngine, ctx: Context, fake_codat: FakeCodat, clock: Clock
) -> None:
    """Before, the 9999 read stayed the newest for good: no later read of the type ever
    landed. Now it counts as generated when received (plus a small skew)."""
    seed_company(fake_codat, bills=2)
    received = datetime.now(UTC)
    bogus = read_event("read.completed", [("bills", "Failed", False)], generated=FAR_FUTURE)
    await store(engine, bogus, received - timedelta(hours=1))
    await Worker(ctx).run_until_idle()
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert state.last_read_status == "Failed"
    assert state.last_read_at == received - timedelta(hours=1) + MAX_CLOCK_SKEW

    genuine = read_event("read.completed", [("bills", "Complete", True)], generated="")
    genuine["generatedDate"] = received.isoformat()
    await store(engine, genuine, received)
    await Worker(ctx).run_until_idle()
    state = await one(engine, DataTypeState, DataTypeState.data_type == "bills")
    assert (state.last_read_status, state.last_read_at) == ("Complete", received)


async def test_a_date_within_the_skew_is_kept_as_codat_wrote_it(engine: AsyncEngine) -> None:
    received = datetime.now(UTC).replace(microsecond=0)
    slightly_ahead = received + MAX_CLOCK_SKEW - timedelta(seconds=1)
    body = read_event("read.completed", [("bills", "Complete", True)])
    body["generatedDate"] = slightly_ahead.isoformat()
    event = incoming_event("msg_skew", json.dumps(body).encode(), received)
    assert event.generated_at == slightly_ahead


# -- the pause --------------------------------------------------------------------------------


async def test_a_rate_limit_until_9999_pauses_for_codats_quota_window_at_most(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, clock: Clock
) -> None:
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = FAR_FUTURE
    reached["payload"]["expiryDate"] = "9999-12-31T23:59:59Z"
    await deliver(client, reached)
    await Worker(ctx).run_until_idle()
    state = await one(engine, RateLimitState)
    assert state.paused_until is not None
    assert state.paused_until <= clock.now + MAX_PAUSE
    assert state.paused_until > clock.now + MAX_PAUSE - timedelta(minutes=5)


def test_a_retry_after_is_never_longer_than_the_quota_window() -> None:
    now = datetime(2026, 5, 3, 10, 0, tzinfo=UTC)
    day = MAX_PAUSE.total_seconds()
    assert retry_after_seconds("30", now) == 30
    assert retry_after_seconds("999999999999", now) == day
    assert retry_after_seconds(format_datetime(now + timedelta(days=400), usegmt=True), now) == day
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 -0000", now) == day


# -- lifting it by hand -----------------------------------------------------------------------


async def pause_until(client: httpx.AsyncClient, ctx: Context, until: datetime) -> None:
    reached = sample("client.rateLimit.reached")
    reached["generatedDate"] = datetime.now(UTC).isoformat()
    reached["payload"]["expiryDate"] = until.isoformat()
    await deliver(client, reached)
    await Worker(ctx).run_until_idle()


async def test_resuming_lifts_the_pause_runs_what_waited_and_is_announced(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=2)
    until = clock.now + timedelta(hours=6)
    await pause_until(client, ctx, until)
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await Worker(ctx).run_until_idle()
    assert fake_codat.calls == [], "paused: the pull waits"

    async with session_factory(engine)() as session:
        resumed = await commands.resume_rate_limit(session, clock.now)
        await session.commit()
    assert (resumed.lifted, resumed.paused_until) == (True, until)
    state = await one(engine, RateLimitState)
    assert (state.paused_until, state.reason) == (None, RESUMED_BY_OPERATOR)
    await Worker(ctx).run_until_idle()  # no clock change: the resume alone lets it go
    job = await one(engine, Job, Job.kind == "pull")
    assert job.status == "done", job.last_error
    assert fake_codat.calls, "the pull ran"
    async with session_factory(engine)() as session:
        announced = (await session.scalars(select(Change).order_by(Change.seq))).all()
    kinds = [c.change_type for c in announced]
    assert kinds == ["rate_limit.paused", "rate_limit.resumed", "data.changed"]
    assert announced[1].data["reason"] == RESUMED_BY_OPERATOR


async def test_resuming_lifts_a_429_pause_in_a_worker_that_is_running(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    """A worker keeps a 429 of its own over the stored state (it may be newer); an
    operator's resume is newer still, and the same worker follows it at its next claim."""
    seed_company(fake_codat, bills=2)
    fake_codat.fail_next("/data/bills", 429, retry_after=3600)
    worker = Worker(ctx)
    await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
    await worker.run_until_idle()
    job = await one(engine, Job, Job.kind == "pull")
    assert job.status == "pending" and job.next_attempt_at >= clock.now + timedelta(minutes=59)
    assert ctx.codat.gate.paused

    async with session_factory(engine)() as session:
        resumed = await commands.resume_rate_limit(session, clock.now)
        await session.commit()
    assert resumed.lifted
    clock.advance(ctx.settings.worker_poll_interval + 1)  # the worker reads the state again
    await worker.run_until_idle()
    job = await one(engine, Job, Job.kind == "pull")
    assert job.status == "done", job.last_error
    assert not ctx.codat.gate.paused


async def test_resuming_with_no_pause_changes_nothing(engine: AsyncEngine, clock: Clock) -> None:
    async with session_factory(engine)() as session:
        resumed = await commands.resume_rate_limit(session, clock.now)
        await session.commit()
    assert not resumed.lifted
    async with engine.connect() as connection:
        assert (await connection.execute(select(RateLimitState))).first() is None
        assert (await connection.execute(select(Change))).first() is None


async def test_the_api_resumes_with_a_token_only(
    client: httpx.AsyncClient, engine: AsyncEngine, ctx: Context, clock: Clock
) -> None:
    until = clock.now + timedelta(hours=3)
    await pause_until(client, ctx, until)
    refused = await client.post("/api/v1/rate-limit/resume")
    assert refused.status_code == 401
    assert (await one(engine, RateLimitState)).paused_until == until

    response = await client.post("/api/v1/rate-limit/resume", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "resumed": True,
        "paused_until": until.isoformat().replace("+00:00", "Z"),
        "reason": "rateLimit.reached",
    }
    status = (await client.get("/api/v1/rate-limit", headers=AUTH)).json()
    assert (status["paused"], status["reason"]) == (False, RESUMED_BY_OPERATOR)
    again = await client.post("/api/v1/rate-limit/resume", headers=AUTH)
    assert again.json() == {"resumed": False, "paused_until": None, "reason": None}


async def test_the_cli_resumes_and_says_what_it_lifted(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    clock: Clock,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    await pause_until(client, ctx, until)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv(
        "CODAT_WEBHOOK_SECRETS", settings.codat_webhook_secrets[0].get_secret_value()
    )
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        # In a thread: the command runs its own event loop.
        first = await asyncio.to_thread(CliRunner().invoke, cli, ["resume"])
        second = await asyncio.to_thread(CliRunner().invoke, cli, ["resume"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert f"the pause until {until.isoformat()} is lifted" in first.output
    assert (second.exit_code, second.output.strip()) == (0, "no pause in force: nothing to resume")
    assert (await one(engine, RateLimitState)).paused_until is None
