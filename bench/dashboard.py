"""Dashboard benchmark: each page's answer time over a million stored events.

    .venv/bin/python -m bench.dashboard [--events 1000000] [--companies 1000] [--requests 100]

PostgreSQL only (what production runs). One database gets N events inserted server-side
(bench.status_api's seed: 5 event types, 1,000 companies, 1% dead, one a second back
from now, so the last 24 hours hold 86,400 of them), the companies with a state for each
Bill Pay data type (a tenth overdue, a twentieth with a failed read) and a write per
company (a tenth failed). Then `codat-webhooks serve` (no embedded worker) is signed in
to as a browser would and each page is timed over --requests sequential keep-alive
requests on loopback (p50, p99, mean): the time the server takes to answer, rendering
included. The goal (issue 19) is under 100 ms for each list page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.migrate import upgrade
from bench.receive import DEFAULT_PG_ADMIN_URL, BenchFailure, PostgresDatabase, run_main, server
from bench.status_api import percentile, seed

TOKEN = "bench-dashboard-token"
COMPANIES = """
INSERT INTO companies (id, name, status, connection_id, connection_status,
    initial_read_status, initial_read_at, write_catch_ups, created_at, updated_at)
SELECT 'company-' || g, 'Company ' || g, 'active', 'conn-' || g,
    CASE WHEN g % 50 = 0 THEN 'Deauthorized' ELSE 'Linked' END,
    CASE WHEN g % 20 = 0 THEN 'incomplete' ELSE 'complete' END, now(), 0, now(), now()
FROM generate_series(0, $1 - 1) AS g
"""
STATES = """
INSERT INTO data_type_states (company_id, data_type, connection_id, last_read_status,
    last_read_at, last_read_issues, last_pulled_at, record_count, refresh_retries,
    catch_ups, updated_at)
SELECT 'company-' || g, t, 'conn-' || g,
    CASE WHEN g % 20 = 0 THEN 'FetchError' ELSE 'Complete' END,
    now() - make_interval(hours => CASE WHEN g % 10 = 0 THEN 48 ELSE 1 END), '[]'::jsonb,
    now() - make_interval(hours => CASE WHEN g % 10 = 0 THEN 48 ELSE 1 END), 100, 0,
    g % 3, now()
FROM generate_series(0, $1 - 1) AS g, unnest($2::text[]) AS t
"""
WRITES = """
INSERT INTO write_outcomes (push_operation_key, company_id, connection_id, data_type,
    write_type, status, error_message, source, updated_at)
SELECT 'push-' || g, 'company-' || g, 'conn-' || g, 'bills', 'Create',
    CASE WHEN g % 10 = 0 THEN 'Failed' ELSE 'Success' END,
    CASE WHEN g % 10 = 0 THEN 'Supplier not found' END, 'webhook',
    now() - make_interval(secs => g)
FROM generate_series(0, $1 - 1) AS g
"""


def seed_companies(url: str, companies: int) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(COMPANIES, companies)
            await connection.execute(STATES, companies, list(BILL_PAY_DATA_TYPES["async"]))
            await connection.execute(WRITES, companies)
            for table in ("companies", "data_type_states", "write_outcomes"):
                await connection.execute(f"ANALYZE {table}")
        finally:
            await connection.close()

    asyncio.run(run())


def signed_in(client: httpx.Client) -> None:
    """Sign in as the form does: its CSRF cookie and field, then the token."""
    form = client.get("/ui/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if found is None:
        raise BenchFailure("no sign-in form at /ui/sign-in")
    answer = client.post("/ui/sign-in", data={"csrf": found.group(1), "token": TOKEN})
    if answer.status_code != 303 or "dashboard_session" not in client.cookies:
        raise BenchFailure(f"sign-in refused: {answer.status_code}")


def deep_events_cursor(client: httpx.Client, params: dict[str, str], depth: int) -> str:
    """The cursor of page `depth + 1`, walked as a person paging would."""
    url = "/ui/events"
    for _ in range(depth):
        page = client.get(url, params=params)
        found = re.search(r'href="/ui/events\?[^"]*cursor=([^"&]+)"', page.text)
        if found is None:
            raise BenchFailure(f"events {params} ended before page {depth + 1}")
        params = {**params, "cursor": found.group(1)}
    return params["cursor"]


def cases(args: argparse.Namespace) -> list[tuple[str, str, dict[str, str], int]]:
    """(name, path, query, pages walked first)."""
    return [
        ("overview", "/ui", {}, 0),
        ("events, first page", "/ui/events", {}, 0),
        ("events, event_type", "/ui/events", {"event_type": "bills.write.unsuccessful"}, 0),
        ("events, company_id", "/ui/events", {"company_id": "company-7"}, 0),
        ("events, status=dead", "/ui/events", {"status": "dead"}, 0),
        ("events, delivery id", "/ui/events", {"delivery_id": "seed_4242"}, 0),
        (f"events, page {args.depth + 1}", "/ui/events", {}, args.depth),
        ("replay dry run, status=dead", "/ui/events/replay", {"status": "dead"}, 0),
        ("companies grid", "/ui/companies", {}, 0),
        ("companies grid, state=stale", "/ui/companies", {"state": "stale"}, 0),
        ("writes", "/ui/writes", {}, 0),
    ]


def timed(client: httpx.Client, path: str, params: dict[str, str], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchFailure(f"{path} {params}: {response.status_code} {response.text[:200]}")
    return samples


def benchmark(args: argparse.Namespace) -> None:
    os.environ["STATUS_API_TOKENS"] = TOKEN
    database = PostgresDatabase(args.pg_admin_url)
    try:
        upgrade(database.url)
        print(f"seeding {args.events:,} events, {args.companies:,} companies ...", flush=True)
        print(f"  seeded in {seed(database.url, args.events):.1f} s", flush=True)
        seed_companies(database.url, args.companies)
        rows: list[tuple[str, list[float]]] = []
        with (
            tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp,
            server("service", database.url, Path(tmp) / "serve.log") as running,
        ):
            base = running.url.removesuffix("/webhooks/codat")
            with httpx.Client(base_url=base, timeout=30) as client:
                signed_in(client)
                for name, path, params, depth in cases(args):
                    query: dict[str, Any] = dict(params)
                    if depth:
                        query["cursor"] = deep_events_cursor(client, params, depth)
                    timed(client, path, query, 10)  # warm
                    rows.append((name, timed(client, path, query, args.requests)))
        print()
        print(f"dashboard pages over {args.events:,} events, {args.requests} requests each")
        print(f"{'page':<34} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
        for name, samples in rows:
            print(
                f"{name:<34} {percentile(samples, 0.5):>7.2f} "
                f"{percentile(samples, 0.99):>7.2f} {statistics.fmean(samples):>8.2f}"
            )
    finally:
        database.drop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--depth", type=int, default=200, help="event pages walked first")
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    )
    run_main(benchmark, parser.parse_args(argv))


if __name__ == "__main__":
    main()
