"""Real worker processes: killed with SIGKILL mid-pull, and two sharing one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.models import EventStatus, Record, WebhookEvent
from app.sandbox.fake_codat import FakeCodat, make_bill, serve_in_thread
from app.webhooks.route import incoming_event
from app.webhooks.store import EventWriter
from tests.conftest import API_KEY, PostgresDatabases, new_database_url, sample
from tests.support.flow import codat_id
from tests.support.ports import free_port
from tests.support.signing import TEST_SECRET

COMPANY = "7a1b2c3d-0000-4000-8000-00000000c0de"
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"


def worker_env(database_url: str, codat_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": codat_url,
        "WORKER_LEASE_SECONDS": "2",
        "WORKER_POLL_INTERVAL": "0.05",
        "PULL_DEBOUNCE_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def start_worker(
    workers: list[subprocess.Popen[bytes]], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    workers.append(process)
    return process


async def store(engine: AsyncEngine, bodies: list[dict[str, Any]]) -> None:
    """Stored exactly as the receiver stores a verified delivery."""
    writer = EventWriter(engine)
    writer.start()
    try:
        now = datetime.now(UTC)
        incoming = [
            incoming_event(f"msg_{uuid.uuid4().hex}", json.dumps(body).encode(), now)
            for body in bodies
        ]
        await asyncio.gather(*(writer.store(event) for event in incoming))
    finally:
        await writer.close()


async def wait_for(check: Any, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def scalar(engine: AsyncEngine, query: Any) -> Any:
    async with engine.connect() as connection:
        return await connection.scalar(query)


async def test_a_worker_killed_mid_pull_loses_nothing_and_duplicates_nothing(
    engine: AsyncEngine,
    database_url: str,
    fake_codat_server: tuple[FakeCodat, str],
    fake_codat: FakeCodat,
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    fake_codat.add_company(COMPANY, CONNECTION)
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(20):
        fake_codat.put_record(
            COMPANY, "bills", make_bill(f"bill-{i:02}"), modified=start + timedelta(seconds=i)
        )
    fake_codat.complete_sync(COMPANY, "bills")
    fake_codat.delay_all = 0.15  # 10 pages of 2: a pull takes about 1.5 s
    body = sample("read.completed")
    body["payload"]["referenceCompany"]["id"] = COMPANY
    body["payload"]["dataTypes"] = [
        {
            "connectionId": CONNECTION,
            "dataType": "bills",
            "status": "Complete",
            "recordsModified": True,
            "issues": [],
        }
    ]
    await store(engine, [body])
    env = worker_env(database_url, fake_codat_server[1], CODAT_PAGE_SIZE="2")
    log = tmp_path / "worker.log"

    first = start_worker(workers, env, log)
    count = select(func.count()).select_from(Record)
    await wait_for(lambda: _at_least(engine, count, 4), within=30, what="two pages stored")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    partial = await scalar(engine, count)
    assert 4 <= partial < 20, "killed in the middle of the pull"

    metrics_port = free_port()
    start_worker(workers, {**env, "WORKER_METRICS_PORT": str(metrics_port)}, log)
    done = select(func.count()).select_from(Record)
    await wait_for(lambda: _at_least(engine, done, 20), within=60, what="the whole pull")
    await wait_for(lambda: _job_done(engine), within=30, what="the job to be done")
    async with engine.connect() as connection:
        ids = (await connection.execute(select(Record.record_id))).scalars().all()
        [event] = (await connection.execute(select(WebhookEvent))).all()
    assert sorted(ids) == sorted(r["id"] for r in fake_codat.records(COMPANY, "bills"))
    assert event.status == EventStatus.PROCESSED
    # A worker on its own serves its counters for Prometheus.
    async with httpx.AsyncClient() as http:
        counters = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    finished = {
        (sample.labels["kind"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(counters)
        for sample in family.samples
        if sample.name == "codat_work_processed_total"
    }
    assert finished[("pull", "done")] >= 1.0


async def _at_least(engine: AsyncEngine, query: Any, n: int) -> bool:
    return bool(await scalar(engine, query) >= n)


async def _job_done(engine: AsyncEngine) -> bool:
    from app.models import Job

    async with engine.connect() as connection:
        query = select(Job.status).where(Job.kind == "pull")
        statuses = (await connection.execute(query)).scalars().all()
    return list(statuses) == ["done"]


def write_event(i: int) -> dict[str, Any]:
    body = sample("bills.write.successful")
    body["id"] = str(uuid.uuid4())
    body["payload"]["id"] = codat_id("push", i)
    body["payload"]["referenceCompany"]["id"] = codat_id("company", i % 50)
    return body


@pytest.fixture
async def postgres_engine(
    tmp_path: Path, postgres_databases: PostgresDatabases
) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """Several workers share PostgreSQL only (SQLite runs one worker), so no SQLite twin."""
    url = await new_database_url("postgresql", tmp_path, postgres_databases)
    engine = create_engine(url)
    yield engine, url
    await engine.dispose()


async def test_two_workers_on_postgresql_process_each_of_1000_events_once(
    postgres_engine: tuple[AsyncEngine, str],
    fake_codat_server: tuple[FakeCodat, str],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    engine, database_url = postgres_engine
    await store(engine, [write_event(i) for i in range(1000)])
    # A lease long enough that a starved machine cannot make it lapse: that a lapsed
    # lease is claimed again is the SIGKILL test's subject, not this one's.
    env = worker_env(
        database_url, fake_codat_server[1], WORKER_CONCURRENCY="16", WORKER_LEASE_SECONDS="30"
    )
    for _ in range(2):
        start_worker(workers, env, tmp_path / "workers.log")

    processed = (
        select(func.count())
        .select_from(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.PROCESSED)
    )
    await wait_for(lambda: _at_least(engine, processed, 1000), within=120, what="1000 events")
    async with engine.connect() as connection:
        rows = (
            await connection.execute(select(WebhookEvent.attempts, WebhookEvent.locked_by))
        ).all()
    assert len(rows) == 1000
    assert {attempts for attempts, _ in rows} == {1}, "no event was claimed twice"
    by_worker = Counter(worker_id for _, worker_id in rows)
    assert len(by_worker) == 2, f"both workers took part: {by_worker}"


async def test_a_worker_on_postgresql_is_woken_by_a_stored_event_not_its_poll(
    postgres_engine: tuple[AsyncEngine, str],
    fake_codat_server: tuple[FakeCodat, str],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Each stored event NOTIFYs; a worker polling only every 60 s still starts it at once,
    and again after its listening connection was killed (it listens anew)."""
    engine, database_url = postgres_engine
    env = worker_env(database_url, fake_codat_server[1], WORKER_POLL_INTERVAL="60")
    start_worker(workers, env, tmp_path / "worker.log")
    listening = text("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    await wait_for(lambda: _listeners(engine, listening), within=30, what="the worker to listen")
    processed = (
        select(func.count())
        .select_from(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.PROCESSED)
    )

    await store(engine, [write_event(0)])
    await wait_for(lambda: _at_least(engine, processed, 1), within=10, what="the first event")

    async with engine.begin() as connection:
        pids = (await connection.execute(listening)).scalars().all()
        for pid in pids:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await wait_for(lambda: _listeners(engine, listening), within=30, what="listening again")
    await store(engine, [write_event(1)])
    await wait_for(lambda: _at_least(engine, processed, 2), within=10, what="the second event")


async def _listeners(engine: AsyncEngine, query: Any) -> bool:
    async with engine.connect() as connection:
        return bool((await connection.execute(query)).first())


async def test_a_worker_killed_mid_delivery_loses_no_change(
    engine: AsyncEngine,
    database_url: str,
    fake_codat_server: tuple[FakeCodat, str],
    fake_codat: FakeCodat,
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Changes in flight to an endpoint when their worker is SIGKILLed, then an endpoint
    answering 500 for a while: a consumer verifying with `svix` gets every change, and
    keeps each once (by `webhook-id`)."""
    from app.models import Change, Delivery
    from tests.support.consumer import NOTIFY_SECRET, Consumer

    consumer = Consumer()
    consumer.hold.set()  # requests stay in flight until the worker is dead
    with serve_in_thread(consumer.app, "consumer") as url:
        endpoints = [{"url": f"{url}/hook", "secret": NOTIFY_SECRET}]
        env = worker_env(
            database_url,
            fake_codat_server[1],
            NOTIFY_ENDPOINTS=json.dumps(endpoints),
            NOTIFY_TIMEOUT_SECONDS="5",
            NOTIFY_RETRY_BASE_SECONDS="0.2",
            NOTIFY_RETRY_MAX_SECONDS="0.5",
            REFRESH_DEBOUNCE_SECONDS="3600",
        )
        await store(engine, [write_event(i) for i in range(6)])
        log = tmp_path / "worker.log"
        first = start_worker(workers, env, log)

        async def in_flight() -> bool:
            return len(consumer.requests) >= 1

        await wait_for(in_flight, within=30, what="a delivery in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        consumer.fail_next = 3  # then the endpoint answers 500 for a while
        consumer.hold.clear()

        start_worker(workers, env, log)
        undelivered = (
            select(func.count()).select_from(Delivery).where(Delivery.status != "delivered")
        )

        changes = select(func.count()).select_from(Change)

        async def all_delivered() -> bool:
            # Every event processed (one the killed worker held comes back after its
            # lease), and every change it recorded delivered.
            made = await scalar(engine, changes)
            return bool(made == 6 and await scalar(engine, undelivered) == 0)

        # The killed worker's deliveries come back once their lease (time-out + lease) ends.
        await wait_for(all_delivered, within=90, what="every delivery")
    async with engine.connect() as connection:
        made = set((await connection.execute(select(Change.id))).scalars().all())
    assert len(made) == 6
    assert set(consumer.received) == made
    assert consumer.rejected == 0
    assert sum(consumer.requests.values()) > 6, "the ones in flight were sent again"
