"""Scale benchmark: how each cost grows from 1,000 to 10,000 (to 100,000) companies.

    .venv/bin/python -m bench.scale [--sizes 1000,10000] [--large] [--prune-events 1000000]
                                    [--recovery-events N] [--no-baseline] [--requests 200]
                                    [--only sweep,api,receive,recovery,prune,memory]

PostgreSQL only. For each size a scratch database (`CREATE DATABASE bench_<random>` on
`BENCH_POSTGRES_URL`, migrated, dropped afterwards) is filled server-side with
generate_series, never through the API: companies with connections, every Bill Pay data
type's state, a local copy spread unevenly (most companies a few records, one in 20,000
with 50,000 bills), write outcomes, done jobs, stored events (20 a company, and
`--prune-events` processed ones older than 30 days). Then, in order:

- sweep: database time to pick one sweep's work (`_overdue_by_company`) and one reconcile
  share (`_due_for_reconcile`), the service's own functions, median of 5, with the
  EXPLAIN ANALYZE plan of each statement (in --out), and per simulated day (96 sweeps);
- api: p50/p99 of the status API's companies list (first page, and the filters the API
  has), one company's detail, one type's local copy (first page, and page 201 of the
  50,000 bills), --requests sequential keep-alive requests each; the dashboard's overview
  and companies grid, unfiltered and by each state;
- receive: `bench.loadgen` into the big database and an empty one, ABBA
  (`bench.status_api`'s); what it stored is deleted afterwards;
- recovery: `--recovery-events` (default: as many as companies) `bills.write.unsuccessful`
  events sent at once through the webhook route (64 connections) while two
  `codat-webhooks worker`s run against the fake Codat at 100 ms a call (after a warm-up of
  32 events each): non-2xx, every event processed exactly once with exactly one call,
  ack p50/p99, and the drain rate against the bound (2 x 16 slots / 0.1 s = 320/s); then
  the same into an empty database (`--no-baseline` skips it);
- prune: `codat-webhooks prune --older-than 30d` of the old events, its time, and
  receiving's p99 (8 connections) before and while it runs.

Once, on a small database of its own (`memory`): a worker's peak RSS (VmHWM) while 16
pulls of two 5,000-bill pages each run at once (`bench.process_fake --bill-pages`).

Ends with the growth table, one column per size; `--json-out` keeps every figure. The
databases, servers and generators share the machine: absolute times move with whatever
else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from sqlalchemy import event, func, select

from app.codat.client import CodatClient
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.config import Settings
from app.dashboard.reads import COMPANY_STATES
from app.db import create_engine, session_factory
from app.migrate import upgrade
from app.models import Company
from app.processing.context import Context
from app.processing.sweep import _due_for_reconcile, _overdue_by_company, sweep_budget
from app.sandbox.fake_codat import make_bill
from app.webhooks.store import EventWriter
from bench.dashboard import TOKEN as DASHBOARD_TOKEN
from bench.dashboard import signed_in
from bench.process import (
    WARMUP_PER_WORKER,
    Events,
    Row,
    central_rate,
    driver_engine,
    fake_codat,
    fetch_calls,
    stop,
    store_all,
    verify,
    worker_env,
    worker_processes,
)
from bench.process_fake import PAGE_SIZE, company_id, push_key
from bench.receive import (
    DEFAULT_PG_ADMIN_URL,
    ROOT,
    SECRET,
    BenchFailure,
    PostgresDatabase,
    load,
    percentile,
    run_main,
    server,
    tail,
)
from bench.status_api import TOKEN, receive_full_and_empty, timed

T = TypeVar("T")
LARGE = 100_000
HEAVY_BILLS = 50_000
EVENTS_PER_COMPANY = 20
WRITES_PER_COMPANY = 2
CODAT_DELAY = 0.1  # seconds per Codat call in the recovery
RECOVERY_WORKERS = 2
RECOVERY_COMPANIES = 1000  # the fake holds 1,000 companies' push operations
# The world blocks every company whose index i has i % 50 == 49 (deleted, or needing
# re-authorisation: no event of theirs calls Codat); the recovery's events skip them.
BLOCKED_EVERY = 50
MEMORY_PULLS = 16
MEMORY_PAGES = 2
STEPS = ("sweep", "api", "receive", "recovery", "prune")
DATA_TYPES = sorted({name for types in BILL_PAY_DATA_TYPES.values() for name in types})
# (data type, the most records a company has, skewed: most have few)
LIST_SIZES = [("bills", 40), ("billPayments", 20), ("suppliers", 10), ("chartOfAccounts", 6)]


# `bench.process_fake.company_id(i)` and a connection id per company, in SQL.
ID_FUNCTIONS = """
CREATE FUNCTION bench_cid(i bigint) RETURNS text IMMUTABLE LANGUAGE sql
    AS $$ SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0') $$;
CREATE FUNCTION bench_conn(i bigint) RETURNS text IMMUTABLE LANGUAGE sql
    AS $$ SELECT '20000000-0000-4000-8000-' || lpad(i::text, 12, '0') $$;
"""


# --- the world ----------------------------------------------------------------------

# $1 companies. 1% deleted, 2% deauthorized (needing re-authorisation), 1% with an
# incomplete initial read and 0.5% waiting for it; tags region (one of 4) and customer
# (the platform's own id, one company each); last reconciled over the last 7 hours (so
# about 1 in 7 are past RECONCILE_INTERVAL, 6 h, as a steady state has them).
COMPANIES = """
INSERT INTO companies (id, name, description, status, status_event_at, connection_id,
    connection_status, connection_event_at, needs_reauth, reauth_reason, tags, deleted_at,
    initial_read_status, initial_read_at, last_reconciled_at, last_push_reconciled_at,
    write_catch_ups, created_at, updated_at)
SELECT bench_cid(i), 'Company ' || i, 'cust_' || i,
    CASE WHEN i % 100 = 99 THEN 'deleted' ELSE 'active' END, now() - interval '90 days',
    bench_conn(i), CASE WHEN i % 50 = 49 THEN 'Deauthorized' ELSE 'Linked' END,
    now() - interval '90 days' * random(), i % 50 = 49,
    CASE WHEN i % 50 = 49 THEN 'Deauthorized' END,
    jsonb_build_object('region', (ARRAY['uk', 'us', 'de', 'fr'])[1 + i % 4],
                       'customer', 'cust_' || i),
    CASE WHEN i % 100 = 99 THEN now() - interval '10 days' END,
    CASE WHEN i % 200 = 7 THEN NULL WHEN i % 100 = 3 THEN 'incomplete' ELSE 'complete' END,
    now() - interval '90 days' * random(),
    now() - interval '7 hours' * random(), now() - interval '8 days' * random(), 0,
    now() - interval '100 days', now()
FROM generate_series(0, $1 - 1) AS i
"""

# How many records each (company, list type) holds: floor(max x u^3), mean max/4; the
# first of every 20,000 companies has HEAVY_BILLS bills. $1 companies, $2 heavy.
SIZES = """
CREATE TABLE bench_sizes AS
SELECT i, data_type,
    CASE WHEN data_type = 'bills' AND i % 20000 = 0 THEN $2
         ELSE floor(most * random() ^ 3)::int END AS n
FROM generate_series(0, $1 - 1) AS i CROSS JOIN unnest($3::text[], $4::int[]) AS t(data_type, most)
"""

# Every Bill Pay type's state: 97% last read Complete within the day; 2% neither pulled
# nor read for days (overdue), 19 in 20 of those already asked for within the day (a
# steady state: each sweep finds what went overdue since the last); $1 companies, $2 the
# types.
STATES = """
INSERT INTO data_type_states (company_id, data_type, connection_id, last_read_status,
    last_read_at, last_pulled_at, pull_watermark, record_count, last_refresh_requested_at,
    refresh_retries, catch_ups, updated_at)
SELECT bench_cid(s.i), s.data_type, bench_conn(s.i),
    CASE WHEN s.r < 0.03 THEN 'FetchError' ELSE 'Complete' END,
    CASE WHEN s.r < 0.02 THEN now() - interval '3 days' ELSE now() - interval '20 hours' * s.r END,
    CASE WHEN s.r < 0.02 THEN now() - interval '4 days' ELSE now() - interval '20 hours' * s.r END,
    now() - interval '1 day', coalesce(z.n, 0),
    CASE WHEN s.r < 0.019 THEN now() - interval '20 hours' * random() END, 0, 0, now()
FROM (SELECT i, data_type, random() AS r
      FROM generate_series(0, $1 - 1) AS i CROSS JOIN unnest($2::text[]) AS data_type) AS s
LEFT JOIN bench_sizes z ON z.i = s.i AND z.data_type = s.data_type
"""

# The local copy; $1 a ~1 KB bill as JSON. Modified over the last year.
RECORDS = """
INSERT INTO records (company_id, data_type, record_id, connection_id, modified_date,
    is_deleted, data, pulled_at)
SELECT bench_cid(z.i), z.data_type, z.data_type || '-' || g, bench_conn(z.i),
    now() - interval '1 second' * ((g * 7919) % 31536000), g % 97 = 0,
    $1::jsonb || jsonb_build_object('id', z.data_type || '-' || g), now() - interval '1 hour'
FROM bench_sizes z CROSS JOIN LATERAL generate_series(1, z.n) AS g
WHERE z.n > 0
"""

# $1 companies, $2 writes: spread over 30 days, 10% failed.
WRITES = """
INSERT INTO write_outcomes (push_operation_key, company_id, connection_id, data_type,
    write_type, status, record_id, requested_at, completed_at, error_message, status_code,
    source, event_at, updated_at)
SELECT md5('push' || k)::uuid::text, bench_cid(k % $1), bench_conn(k % $1), 'bills', 'Create',
    CASE WHEN k % 10 = 0 THEN 'Failed' ELSE 'Success' END, 'bill-' || k,
    now() - interval '30 days' * (k::float8 / $2),
    now() - interval '30 days' * (k::float8 / $2) + interval '40 s',
    CASE WHEN k % 10 = 0 THEN 'Validation failed' END,
    CASE WHEN k % 10 = 0 THEN 400 END, 'webhook',
    now() - interval '30 days' * (k::float8 / $2),
    now() - interval '30 days' * (k::float8 / $2)
FROM generate_series(0, $2 - 1) AS k
"""

# Stored events: $1 how many, $2 companies, $3 newest received_at, $4 span in seconds,
# $5 a prefix for delivery ids. Received in id order over the span; 1% dead.
EVENTS = """
INSERT INTO webhook_events (delivery_id, event_id, event_type, company_id, connection_id,
    generated_at, received_at, raw_body, status, attempts, processed_at, last_error)
SELECT $5 || g, md5($5 || g),
    (ARRAY['read.completed', 'bills.write.successful', 'bills.write.unsuccessful',
           'read.completed.initial', 'connection.connected'])[1 + g % 5],
    bench_cid(g % $2), bench_conn(g % $2),
    $3::timestamptz - make_interval(secs => $4 * (1 - g::float8 / $1)),
    $3::timestamptz - make_interval(secs => $4 * (1 - g::float8 / $1)),
    convert_to('{"id":"' || md5($5 || g) || '","eventType":"read.completed",'
               || '"generatedDate":"2026-01-01T00:00:00Z","payload":{"referenceCompany":'
               || '{"id":"' || bench_cid(g % $2) || '","name":"Company ' || g % $2
               || '"},"dataTypes":[{"dataType":"bills","status":"Complete",'
               || '"recordsModified":true}]}}', 'UTF8'),
    CASE WHEN g % 100 = 0 THEN 'dead' ELSE 'processed' END, 1,
    $3::timestamptz - make_interval(secs => $4 * (1 - g::float8 / $1)) + interval '2 seconds',
    CASE WHEN g % 100 = 0 THEN 'Codat answered 500' END
FROM generate_series(1, $1) AS g
"""

# Done pull jobs for every (company, type), a done reconcile per company; the sweep armed
# a day ahead, so the recovery's workers do nothing but the events. $1 companies, $2 the
# types.
JOBS = """
INSERT INTO jobs (key, kind, company_id, data_type, connection_id, status, attempts,
    next_attempt_at, rerun, created_at, updated_at, finished_at)
SELECT 'pull:' || bench_cid(i) || ':' || t, 'pull', bench_cid(i), t, bench_conn(i), 'done', 1,
    now() - interval '1 day', false, now() - interval '30 days', now() - interval '1 day',
    now() - interval '1 day'
FROM generate_series(0, $1 - 1) AS i CROSS JOIN unnest($2::text[]) AS t
UNION ALL
SELECT 'reconcile:' || bench_cid(i), 'reconcile', bench_cid(i), NULL, NULL, 'done', 1,
    now() - interval '1 hour', false, now() - interval '30 days', now() - interval '1 hour',
    now() - interval '1 hour'
FROM generate_series(0, $1 - 1) AS i
UNION ALL
SELECT 'sweep', 'sweep', NULL, NULL, NULL, 'pending', 0, now() + interval '1 day', false,
    now(), now(), NULL
"""


# Indexes of the big tables that no constraint owns.
SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = 'public' AND i.tablename IN ('records', 'webhook_events')
AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
"""

COUNTS = """
SELECT (SELECT count(*) FROM companies) AS companies,
    (SELECT count(*) FROM data_type_states) AS data_type_states,
    (SELECT count(*) FROM records) AS records,
    (SELECT count(*) FROM write_outcomes) AS write_outcomes,
    (SELECT count(*) FROM webhook_events) AS webhook_events
"""


def record_template() -> str:
    bill = make_bill("template", amount=1234.5)
    bill["modifiedDate"] = "2026-01-01T00:00:00Z"
    bill["metadata"] = {"isDeleted": False}
    return json.dumps(bill)


@dataclass
class World:
    companies: int
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    old_events: int = 0


async def build_world(url: str, companies: int, prune_events: int) -> World:
    world = World(companies)
    started = time.monotonic()
    now = datetime.now(UTC)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(ID_FUNCTIONS)
        await connection.execute("SELECT setseed(0.21)")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        # The big tables' secondary indexes are built once after the load, faster than
        # maintained row by row (the migrations' definitions, put back as they were).
        indexes = await connection.fetch(SECONDARY_INDEXES)
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["indexname"]}"')
        types, most = zip(*LIST_SIZES, strict=True)
        await connection.execute(COMPANIES, companies)
        await connection.execute(SIZES, companies, HEAVY_BILLS, list(types), list(most))
        await connection.execute(STATES, companies, DATA_TYPES)
        await connection.execute(RECORDS, record_template())
        await connection.execute("DROP TABLE bench_sizes")
        await connection.execute(WRITES, companies, WRITES_PER_COMPANY * companies)
        # Old events first (lower ids), as a month of history would have them.
        if prune_events:
            old_end = now - timedelta(days=40)
            await connection.execute(EVENTS, prune_events, companies, old_end, 50 * 86400, "old_")
        recent = EVENTS_PER_COMPANY * companies
        await connection.execute(EVENTS, recent, companies, now, 29 * 86400, "seed_")
        await connection.execute(JOBS, companies, DATA_TYPES)
        for index in indexes:
            await connection.execute(index["indexdef"])
        # A long-lived database has been vacuumed (visibility map) and analysed.
        await connection.execute("VACUUM ANALYZE")
        counts = await connection.fetchrow(COUNTS)
        assert counts is not None
        world.rows = dict(counts)
        world.bytes = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await connection.close()
    world.old_events = prune_events - prune_events // 100  # 1 in 100 is dead: kept
    world.seconds = time.monotonic() - started
    return world


# --- the sweep's picking ------------------------------------------------------------


@dataclass
class Timing:
    median_ms: float
    plans: list[str]

    @property
    def database_ms(self) -> float:
        """The statements' execution time as EXPLAIN ANALYZE measured it."""
        return sum(execution_ms(plan) for plan in self.plans)


def execution_ms(plan: str) -> float:
    for line in plan.splitlines():
        if line.strip().startswith("Execution Time:"):
            return float(line.split(":")[1].split()[0])
    return 0.0


async def explain(url: str, statements: list[tuple[str, Any]]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each captured statement, with its parameters."""
    engine = create_engine(url)
    plans = []
    try:
        async with engine.connect() as connection:
            for statement, parameters in statements:
                result = await connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                )
                plans.append(statement + "\n" + "\n".join(row[0] for row in result))
                await connection.rollback()
    finally:
        await engine.dispose()
    return plans


async def sweep_picking(url: str, repeat: int = 5) -> dict[str, Timing]:
    """Median database time of the sweep's two picks, as run_sweep makes them, and plans."""
    settings = Settings(database_url=url, codat_webhook_secrets=SECRET)
    engine = create_engine(url)
    ctx = Context(
        sessions=session_factory(engine), codat=CodatClient(api_key="bench"), settings=settings
    )
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    times: dict[str, list[float]] = {"count": [], "reconcile share": [], "overdue": []}
    statements: dict[str, list[tuple[str, Any]]] = {}
    try:
        for _ in range(repeat):
            now = datetime.now(UTC)
            async with ctx.sessions() as session:
                for name in times:
                    captured.clear()
                    started = time.perf_counter()
                    if name == "count":
                        active = Company.status == "active"
                        companies = int(
                            await session.scalar(select(func.count()).where(active)) or 0
                        )
                    elif name == "reconcile share":
                        await _due_for_reconcile(session, ctx, now, companies)
                    else:
                        budget = sweep_budget(ctx, None, companies, now)
                        await _overdue_by_company(session, ctx, now, budget)
                    times[name].append((time.perf_counter() - started) * 1000)
                    statements[name] = list(captured)
                await session.rollback()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
        await ctx.codat.aclose()
        await engine.dispose()
    return {
        name: Timing(statistics.median(samples), await explain(url, statements[name]))
        for name, samples in times.items()
    }


def plan_summary(plan: str) -> str:
    """'Execution Time' and the scans of one EXPLAIN ANALYZE."""
    scans = []
    executed = ""
    for line in plan.splitlines():
        text = line.strip().lstrip("-> ").strip()
        if " Scan " in f" {text}" and " on " in text:
            scans.append(text.split("  (")[0])
        if text.startswith("Execution Time"):
            executed = text.split(":")[1].strip()
    return f"{executed}; " + "; ".join(scans)


# --- the status API -----------------------------------------------------------------


def api_cases(client: httpx.Client, companies: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, query): the list's first page and filters the API has, a company's
    detail, the copy of one type: a typical company's and deep in the biggest one's."""
    heavy, typical = company_id(0), company_id(companies // 2 + 1)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("companies, first page", "/api/v1/companies", {"limit": 50}),
    ]
    spec = client.get("/openapi.json").json()
    parameters = spec["paths"]["/api/v1/companies"]["get"].get("parameters", [])
    filters = {p["name"] for p in parameters} - {"limit", "cursor"}
    for name, value, label in company_filters(companies):
        if name in filters:
            cases.append((f"companies, {label}", "/api/v1/companies", {name: value}))
    missing = filters - {name for name, _, _ in company_filters(companies)}
    if missing:
        print(f"    (companies list filters not measured: {', '.join(sorted(missing))})")
    cases += [
        ("company detail", f"/api/v1/companies/{typical}", {}),
        ("company detail, 50k bills", f"/api/v1/companies/{heavy}", {}),
        ("bills, first page", f"/api/v1/companies/{typical}/data/bills", {"limit": 50}),
    ]
    path = f"/api/v1/companies/{heavy}/data/bills"
    cursor = None
    for _ in range(200):  # 10,000 bills in
        page = client.get(path, params={"limit": 50, **({"cursor": cursor} if cursor else {})})
        cursor = page.json()["next_cursor"]
    cases.append(("bills, page 201 of 50k", path, {"limit": 50, "cursor": cursor}))
    return cases


def company_filters(companies: int) -> list[tuple[str, str, str]]:
    """(parameter, value, label): filters of the companies lists matching a quarter of the
    companies, one company (the platform's own customer id, the same label at every
    size), and 2%."""
    return [
        ("tag", "region:uk", "tag=region:uk"),
        ("tag", f"customer:cust_{companies // 2 + 1}", "tag=customer:<one id>"),
        ("needs_reauth", "true", "needs_reauth=true"),
    ]


def dashboard_cases(companies: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The dashboard's overview (it counts companies by state) and its companies grid,
    first page and filtered by each state (the lists' filters by state live there)."""
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("dashboard overview", "/ui", {}),
        ("dashboard companies", "/ui/companies", {}),
    ]
    cases += [
        (f"dashboard companies, state={state}", "/ui/companies", {"state": state})
        for state in COMPANY_STATES
    ]
    cases += [
        (f"dashboard companies, {label}", "/ui/companies", {"tag": value})
        for name, value, label in company_filters(companies)
        if name == "tag"
    ]
    return cases


def status_api(url: str, companies: int, requests: int, workdir: Path) -> dict[str, list[float]]:
    os.environ["STATUS_API_TOKENS"] = f"{TOKEN},{DASHBOARD_TOKEN}"
    rows: dict[str, list[float]] = {}
    with server("service", url, workdir / "api.log") as running:
        base = running.url.removesuffix("/webhooks/codat")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for name, path, params in api_cases(client, companies):
                timed(client, path, params, 20)  # warm
                rows[name] = timed(client, path, params, requests)
        with httpx.Client(base_url=base, timeout=30) as browser:
            signed_in(browser)
            for name, path, params in dashboard_cases(companies):
                timed(browser, path, params, 5)  # warm
                rows[name] = timed(browser, path, params, max(20, requests // 4))
    return rows


# --- receiving ----------------------------------------------------------------------


async def max_event_id(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT coalesce(max(id), 0) FROM webhook_events"))
    finally:
        await connection.close()


async def delete_events_after(url: str, last_id: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DELETE FROM webhook_events WHERE id > $1", last_id)
    finally:
        await connection.close()


def receiving(big: str, args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    """Events/s into the big database and an empty one, alternating (`bench.status_api`'s)."""
    before = asyncio.run(max_event_id(big))
    try:
        return receive_full_and_empty(big, args, workdir)
    finally:
        # Stored but never to be processed: they would be the recovery's workers' work.
        asyncio.run(delete_events_after(big, before))


# --- the recovery -------------------------------------------------------------------


@dataclass
class Recovery:
    events: int
    acked: int = 0
    non_2xx: int = 0
    errors: int = 0
    ack_p50_ms: float = 0.0
    ack_p99_ms: float = 0.0
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    central_per_s: float = 0.0

    @property
    def bound(self) -> float:
        return RECOVERY_WORKERS * 16 / CODAT_DELAY

    @property
    def drain_per_s(self) -> float:
        return self.events / self.drain_seconds if self.drain_seconds else 0.0


async def recovery_rows(url: str, after: int) -> list[Row]:
    connection = await asyncpg.connect(url)
    try:
        records = await connection.fetch(
            "SELECT delivery_id, convert_from(raw_body, 'UTF8')::jsonb #>> '{payload,id}' AS key, "
            "status, attempts, extract(epoch FROM received_at)::float8 AS received, "
            "extract(epoch FROM processed_at)::float8 AS processed FROM webhook_events "
            "WHERE id > $1",
            after,
        )
    finally:
        await connection.close()
    return [
        Row(r["delivery_id"], r["key"], r["status"], r["attempts"], r["received"], r["processed"])
        for r in records
    ]


async def wait_recovered(
    url: str, after: int, expected: int, within: float, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Until the recovery's events are out of pending/processing (only those rows read)."""
    connection = await asyncpg.connect(url)
    deadline = time.monotonic() + within
    try:
        while True:
            row = await connection.fetchrow(
                "SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'processing')) AS done, "
                "count(*) FILTER (WHERE last_error IS NOT NULL) AS failed, "
                "min(last_error) AS error FROM webhook_events WHERE id > $1",
                after,
            )
            assert row is not None
            if row["failed"]:
                raise BenchFailure(f"{row['failed']} event(s) failed, e.g.: {row['error']}")
            if row["done"] >= expected:
                return
            if any(worker.poll() is not None for worker in workers):
                raise BenchFailure("a worker exited during the recovery")
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {row['done']} of {expected} events drained in time")
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def warm_up(
    url: str, companies: int, indices: range, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A few events each worker processes first (connections, imports, caches), stored as
    the route stores them, as `bench.process` warms up."""
    after = await max_event_id(url)
    engine = driver_engine(url)
    writer = EventWriter(engine)
    writer.start()
    try:
        events = Events(companies, BLOCKED_EVERY)
        await store_all(writer, [events.make(i, "warm") for i in indices])
    finally:
        await writer.close()
        await engine.dispose()
    await wait_recovered(url, after, len(indices), 120, workers)


def recovery(url: str, size: int, events: int, workdir: Path, label: str) -> Recovery:
    """A bulk recovery through the route, two workers draining it at 100 ms a call."""
    companies = min(size, RECOVERY_COMPANIES)
    found = Recovery(events)
    warm = range(events, events + WARMUP_PER_WORKER * RECOVERY_WORKERS)
    settings = argparse.Namespace(concurrency=16, poll_interval=0.5)
    log = workdir / f"recovery-{label}-fake.log"
    with fake_codat(CODAT_DELAY, companies, warm.stop, log, skip_every=BLOCKED_EVERY) as fake:
        env = worker_env(url, fake.url, settings, "none")
        log = workdir / f"recovery-{label}-workers.log"
        with (
            worker_processes(RECOVERY_WORKERS, env, log) as workers,
            server("service", url, workdir / f"recovery-{label}-serve.log") as running,
        ):
            asyncio.run(warm_up(url, companies, warm, workers))
            after = asyncio.run(max_event_id(url))
            burst = ["--events", str(events), "--recovery-companies", str(companies)]
            burst += ["--skip-every", str(BLOCKED_EVERY)]
            gentle = argparse.Namespace(warmup=0, concurrency=64)
            result = load(running, gentle, workdir / f"recovery-{label}.json", 0, burst)
            within = 120 + 3 * events / found.bound
            asyncio.run(wait_recovered(url, after, events, within, workers))
        calls, other, _ = fetch_calls(fake)
    warmed = {push_key(i) for i in warm}
    calls = {key: times for key, times in calls.items() if key not in warmed}
    found.acked, found.non_2xx = result["acknowledged"], result["non_2xx"]
    found.errors = sum(result["errors"].values())
    found.send_seconds = result["seconds"]
    latencies = json.loads((workdir / f"recovery-{label}.json").read_text())["latencies"]
    found.ack_p50_ms = percentile(latencies, 0.5) * 1000
    found.ack_p99_ms = percentile(latencies, 0.99) * 1000
    rows = asyncio.run(recovery_rows(url, after))
    verify(f"recovery of {events}", rows, events, calls, other)
    done = [r.processed_at for r in rows if r.processed_at is not None]
    found.drain_seconds = max(done) - min(r.received_at for r in rows)
    found.central_per_s, _, _ = central_rate(done)
    if found.non_2xx or found.errors or found.acked != events:
        raise BenchFailure(
            f"recovery: {found.acked} of {events} acknowledged, {found.non_2xx} non-2xx, "
            f"{found.errors} connection errors"
        )
    warnings = log.read_text(errors="replace").splitlines()
    if warnings:
        print(f"    ({len(warnings)} worker log line(s) at WARNING+, first: {warnings[0][:300]})")
    return found


def recovery_on_empty(size: int, events: int, args: argparse.Namespace, workdir: Path) -> Recovery:
    """The same recovery into a fresh database: what the big one costs, side by side."""
    empty = PostgresDatabase(args.pg_admin_url)
    try:
        upgrade(empty.url)
        asyncio.run(arm_sweep(empty.url))
        return recovery(empty.url, size, events, workdir, "empty")
    finally:
        empty.drop()


def describe_recovery(label: str, found: Recovery) -> str:
    return (
        f"    into the {label} database: acked {found.acked:,} (non-2xx {found.non_2xx}) in "
        f"{found.send_seconds:.1f} s, ack p50 {found.ack_p50_ms:.1f} ms, p99 "
        f"{found.ack_p99_ms:.1f} ms; drained in {found.drain_seconds:.1f} s = "
        f"{found.drain_per_s:.0f}/s (central {found.central_per_s:.0f}/s) vs bound "
        f"{found.bound:.0f}/s = {found.drain_per_s / found.bound:.2f}; each processed once, "
        "one call each"
    )


# --- a worker's memory --------------------------------------------------------------


def rss_mb(pid: int, field_name: str) -> float:
    """VmRSS or VmHWM (peak) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def queue_pulls(url: str, pulls: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(ID_FUNCTIONS)
        await connection.execute(
            """INSERT INTO jobs (key, kind, company_id, data_type, status, attempts,
                next_attempt_at, rerun, created_at, updated_at)
            SELECT 'pull:' || bench_cid(i) || ':bills', 'pull', bench_cid(i), 'bills', 'pending', 0,
                now(), false, now(), now()
            FROM generate_series(0, $1 - 1) AS i""",
            pulls,
        )
    finally:
        await connection.close()


async def pulls_state(url: str) -> tuple[int, int, str | None, int]:
    """(done, dead, an error, records) of the memory run's pull jobs."""
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'done') AS done, "
            "count(*) FILTER (WHERE status = 'dead' OR last_error IS NOT NULL) AS dead, "
            "min(last_error) AS error FROM jobs WHERE kind = 'pull'"
        )
        records = await connection.fetchval("SELECT count(*) FROM records")
    finally:
        await connection.close()
    assert row is not None
    return row["done"], row["dead"], row["error"], int(records)


async def arm_sweep(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO jobs (key, kind, status, attempts, next_attempt_at, rerun, "
            "created_at, updated_at) VALUES ('sweep', 'sweep', 'pending', 0, "
            "now() + interval '1 day', false, now(), now())"
        )
    finally:
        await connection.close()


def worker_memory(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Peak RSS of one worker while MEMORY_PULLS pulls of 5,000-bill pages run at once."""
    database = PostgresDatabase(args.pg_admin_url)
    try:
        upgrade(database.url)
        asyncio.run(arm_sweep(database.url))
        log = workdir / "memory-fake.log"
        with fake_codat(0.0, MEMORY_PULLS, 0, log, bill_pages=MEMORY_PAGES) as fake:
            settings = argparse.Namespace(concurrency=MEMORY_PULLS, poll_interval=0.5)
            env = worker_env(database.url, fake.url, settings, "none")
            with worker_processes(1, env, workdir / "memory-worker.log") as workers:
                pid = workers[0].pid
                time.sleep(3)
                idle = rss_mb(pid, "VmRSS")
                asyncio.run(queue_pulls(database.url, MEMORY_PULLS))
                deadline = time.monotonic() + 600
                while True:
                    done, dead, error, records = asyncio.run(pulls_state(database.url))
                    if dead:
                        raise BenchFailure(f"memory: a pull failed: {error}")
                    if done == MEMORY_PULLS:
                        break
                    if workers[0].poll() is not None or time.monotonic() > deadline:
                        raise BenchFailure(f"memory: {done} of {MEMORY_PULLS} pulls done")
                    time.sleep(0.5)
                peak = rss_mb(pid, "VmHWM")
        expected = MEMORY_PULLS * MEMORY_PAGES * PAGE_SIZE
        if records != expected:
            raise BenchFailure(f"memory: {records} records stored, {expected} pulled")
    finally:
        database.drop()
    return {"idle_mb": idle, "peak_mb": peak, "records": records}


# --- prune --------------------------------------------------------------------------


@dataclass
class Prune:
    events: int
    pruned: int = 0
    seconds: float = 0.0
    before_p99_ms: float = 0.0
    during_p99_ms: float = 0.0
    during_max_ms: float = 0.0
    before_per_s: float = 0.0
    during_per_s: float = 0.0


def prune_run(url: str, old_events: int, args: argparse.Namespace, workdir: Path) -> Prune:
    """`codat-webhooks prune --older-than 30d` while 8 connections send events."""
    found = Prune(old_events)
    gentle = argparse.Namespace(**{**vars(args), "concurrency": 8, "warmup": 1.0})
    command = [str(Path(sys.executable).parent / "codat-webhooks"), "prune", "--older-than", "30d"]
    env = {**os.environ, "DATABASE_URL": url, "CODAT_WEBHOOK_SECRETS": SECRET}
    with server("service", url, workdir / "prune-serve.log") as running:
        before = load(running, gentle, workdir / "prune-before.json", 5.0)
        found.before_p99_ms, found.before_per_s = before["p99_ms"], before["events_per_s"]
        latencies: list[float] = []
        acked = window = 0.0
        started = time.monotonic()
        with (workdir / "prune.log").open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            while process.poll() is None:
                detail = workdir / "prune-during.json"
                result = load(running, gentle, detail, 3.0)
                latencies += json.loads(detail.read_text())["latencies"]
                acked += result["window_acknowledged"]
                window += result["seconds"]
        finally:
            stop(process)
        found.seconds = time.monotonic() - started
    output = (workdir / "prune.log").read_text(errors="replace")
    if process.returncode != 0 or "pruned" not in output:
        raise BenchFailure(f"prune failed ({process.returncode}): {tail(workdir / 'prune.log')}")
    found.pruned = int(output.split("pruned ", 1)[1].split(" ", 1)[0])
    found.during_p99_ms = percentile(latencies, 0.99) * 1000
    found.during_max_ms = max(latencies, default=0.0) * 1000
    found.during_per_s = acked / window if window else 0.0
    if found.pruned != old_events:
        raise BenchFailure(f"prune deleted {found.pruned} events, {old_events} were old")
    return found


# --- one size -----------------------------------------------------------------------


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"  {name} ...", flush=True)
    yield
    print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)


def run_size(size: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"companies": size}
    print(f"\n{size:,} companies", flush=True)
    disk_before = disk_free()
    database = PostgresDatabase(args.pg_admin_url)
    try:
        upgrade(database.url)
        with step("build"):
            world = asyncio.run(build_world(database.url, size, args.prune_events))
        figures["world"] = vars(world)
        figures["disk_used_gb"] = (disk_before - disk_free()) / 1e9
        print(
            f"    {world.seconds:.0f} s, {world.bytes / 1e9:.2f} GB in the database, "
            f"{figures['disk_used_gb']:.2f} GB of disk; rows: "
            + ", ".join(f"{name} {count:,}" for name, count in world.rows.items()),
            flush=True,
        )
        if "sweep" in args.only:
            with step("sweep picking"):
                picks = asyncio.run(sweep_picking(database.url))
            figures["sweep"] = {name: t.median_ms for name, t in picks.items()}
            figures["sweep_db"] = {name: t.database_ms for name, t in picks.items()}
            with (args.out / f"plans-{size}.txt").open("w") as plans:
                for name, timing in picks.items():
                    print(
                        f"    {name}: {timing.median_ms:.1f} ms (median of 5; in the database "
                        f"{timing.database_ms:.1f} ms)"
                    )
                    for plan in timing.plans:
                        print(f"      plan: {plan_summary(plan)}")
                        plans.write(f"-- {name}\n{plan}\n\n")
        if "api" in args.only:
            with step("status API"):
                api = status_api(database.url, size, args.requests, workdir)
            figures["api"] = {
                name: {"p50": percentile(s, 0.5), "p99": percentile(s, 0.99)}
                for name, s in api.items()
            }
            for name, values in figures["api"].items():
                print(f"    {name:<28} p50 {values['p50']:6.2f} ms  p99 {values['p99']:6.2f} ms")
        if "receive" in args.only:
            with step("receiving, big against empty"):
                rates = receiving(database.url, args, workdir)
            big, empty = statistics.fmean(rates["full"]), statistics.fmean(rates["empty"])
            figures["receive"] = {"big": big, "empty": empty, "ratio": big / empty}
            print(f"    big / empty: {big:,.0f} / {empty:,.0f} events/s = {big / empty:.2f}x")
        if "recovery" in args.only:
            events = args.recovery_events or size
            with step(f"recovery of {events:,} events"):
                found = recovery(database.url, size, events, workdir, "big")
                print(describe_recovery("big", found), flush=True)
                figures["recovery"] = {
                    **vars(found),
                    "bound": found.bound,
                    "drain_per_s": found.drain_per_s,
                }
                if not args.no_baseline:
                    baseline = recovery_on_empty(size, events, args, workdir)
                    print(describe_recovery("empty", baseline), flush=True)
                    figures["recovery"]["empty_drain_per_s"] = baseline.drain_per_s
        if "prune" in args.only and args.prune_events:
            with step(f"prune of {args.prune_events:,} old events"):
                pruned = prune_run(database.url, world.old_events, args, workdir)
            figures["prune"] = vars(pruned)
            print(
                f"    pruned {pruned.pruned:,} in {pruned.seconds:.1f} s; receiving p99 "
                f"{pruned.before_p99_ms:.1f} ms before, {pruned.during_p99_ms:.1f} ms during "
                f"(max {pruned.during_max_ms:.0f} ms), {pruned.before_per_s:,.0f} -> "
                f"{pruned.during_per_s:,.0f} events/s",
                flush=True,
            )
        figures["peak_disk_used_gb"] = (disk_before - disk_free()) / 1e9
    finally:
        database.drop()
    return figures


def disk_free() -> int:
    stats = os.statvfs("/")
    return stats.f_bavail * stats.f_frsize


# --- the table ----------------------------------------------------------------------


def growth_table(results: list[dict[str, Any]], memory: dict[str, float] | None) -> str:
    sizes = [r["companies"] for r in results]
    lines = [
        "| at N companies | " + " | ".join(f"{n:,}" for n in sizes) + " | goal |",
        "|---|" + "---:|" * len(sizes) + "---|",
    ]

    def row(label: str, goal: str, value: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for r in results:
            try:
                cells.append(value(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")

    row(
        "rows: type states / records",
        "",
        lambda r: "{:,} / {:,}".format(
            r["world"]["rows"]["data_type_states"], r["world"]["rows"]["records"]
        ),
    )
    row("stored events", "", lambda r: f"{r['world']['rows']['webhook_events']:,}")
    row(
        "build (s) / database (GB)",
        "",
        lambda r: "{:.0f} / {:.2f}".format(r["world"]["seconds"], r["world"]["bytes"] / 1e9),
    )
    for name, goal in (("overdue", "< 100 ms at 100k"), ("reconcile share", "")):
        row(f"sweep: pick {name} (ms)", goal, figure("sweep", name))
        row(f"sweep: pick {name}, database only (ms)", goal, figure("sweep_db", name))
    row(
        "sweep: picking per day (s, 96 sweeps)",
        "",
        lambda r: "{:.1f}".format(sum(r["sweep"].values()) * 96 / 1000),
    )
    names = sorted({name for r in results for name in r.get("api", {})}, key=api_key)
    for name in names:
        goal = "< 100 ms (issue 19)" if name.startswith("dashboard") else "< 10 ms at 100k"
        row(f"p99 (ms): {name}", goal, figure("api", name, "p99"))
    row("receive: big / empty", ">= 0.9x", lambda r: f"{r['receive']['ratio']:.2f}x")
    row(
        "recovery: events, non-2xx",
        "0 non-2xx",
        lambda r: "{:,}, {}".format(r["recovery"]["events"], r["recovery"]["non_2xx"]),
    )
    row("recovery: ack p99 (ms)", "", figure("recovery", "ack_p99_ms"))
    row(
        "recovery: drain / bound",
        ">= 0.8",
        lambda r: "{:.0f}/s of {:.0f} = {:.2f}".format(
            r["recovery"]["drain_per_s"],
            r["recovery"]["bound"],
            r["recovery"]["drain_per_s"] / r["recovery"]["bound"],
        ),
    )
    row("recovery into an empty database: drain (/s)", "", figure("recovery", "empty_drain_per_s"))
    row(
        "prune: events, seconds",
        "",
        lambda r: "{:,}, {:.0f} s".format(r["prune"]["pruned"], r["prune"]["seconds"]),
    )
    row(
        "prune: receive p99 before / during (ms)",
        "not blocked",
        lambda r: "{:.0f} / {:.0f}".format(
            r["prune"]["before_p99_ms"], r["prune"]["during_p99_ms"]
        ),
    )
    if memory:
        lines.append(
            f"\nA worker's peak RSS with {MEMORY_PULLS} pulls of {PAGE_SIZE:,}-bill pages at "
            f"once: {memory['peak_mb']:.0f} MB (idle {memory['idle_mb']:.0f} MB; goal < 500 MB)"
        )
    return "\n".join(lines)


def figure(*path: str) -> Callable[[dict[str, Any]], str]:
    """The figure at `path` in one size's results, to one decimal."""

    def cell(result: dict[str, Any]) -> str:
        value: Any = result
        for key in path:
            value = value[key]
        return f"{value:.1f}"

    return cell


def api_key(name: str) -> tuple[int, str]:
    """Status API first (companies, a company, its copy), then the dashboard."""
    order = ["companies", "company detail", "bills", "dashboard"]
    return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), 9), name


def benchmark(args: argparse.Namespace) -> int:
    sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    if args.large and LARGE not in sizes:
        sizes.append(LARGE)
    args.only = set(args.only.split(",")) if args.only else set(STEPS) | {"memory"}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    memory: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        if "memory" in args.only:
            with step(f"a worker's memory, {MEMORY_PULLS} pulls at once"):
                memory = worker_memory(args, workdir)
            print(f"    peak RSS {memory['peak_mb']:.0f} MB (idle {memory['idle_mb']:.0f} MB)")
        for size in sizes:
            results.append(run_size(size, args, workdir))
            if args.json_out:
                args.json_out.write_text(json.dumps({"sizes": results, "memory": memory}))
    print()
    print(growth_table(results, memory))
    print(f"\n(plans in {args.out}; {time.monotonic() - started:.0f} s in all)")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="companies, comma-separated")
    parser.add_argument("--large", action="store_true", help="add 100,000 companies")
    parser.add_argument("--prune-events", type=int, default=1_000_000, help="old events")
    parser.add_argument(
        "--recovery-events", type=int, default=0, help="default: as many as companies"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="no recovery into an empty database"
    )
    parser.add_argument("--requests", type=int, default=200, help="per status API case")
    parser.add_argument("--seconds", type=float, default=8.0, help="receive window per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--only", default="", help=f"some of {','.join(STEPS)},memory (default: all)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-scale")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    main()
