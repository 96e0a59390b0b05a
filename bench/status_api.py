"""Status API benchmark: list latency over a million stored events, and receiving speed
with that table against an empty one.

    .venv/bin/python -m bench.status_api [--events 1000000] [--requests 300] [--seconds 8]

PostgreSQL only (what production runs). One database gets N events inserted server-side
(5 event types, 1,000 companies, 1% dead), then `codat-webhooks serve` answers:
- the first page of /api/v1/events, unfiltered and filtered by type, company, status;
- a page deep into a filtered list (the cursor after walking --depth pages), repeatedly.
Each is timed over --requests sequential keep-alive requests (p50, p99).
Then the webhook route is loaded (bench.loadgen) against the full database and a fresh
empty one, alternating full, empty, empty, full, and the events/s compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.migrate import upgrade
from bench.receive import (
    DEFAULT_PG_ADMIN_URL,
    BenchFailure,
    PostgresDatabase,
    load,
    run_main,
    server,
)

TOKEN = "bench-status-token"
SEED = """
INSERT INTO webhook_events (delivery_id, event_id, event_type, company_id, connection_id,
    generated_at, received_at, raw_body, status, attempts, next_attempt_at, processed_at)
SELECT 'seed_' || g, md5(g::text),
    (ARRAY['read.completed', 'bills.write.successful', 'bills.write.unsuccessful',
           'read.completed.initial', 'connection.connected'])[1 + g % 5],
    'company-' || (g % 1000), 'conn-' || (g % 1000),
    now() - make_interval(secs => $1 - g), now() - make_interval(secs => $1 - g),
    convert_to('{"id":"' || g || '","eventType":"read.completed","generatedDate":'
               || '"2026-01-01T00:00:00Z","payload":{"referenceCompany":{"id":"company-'
               || (g % 1000) || '"}}}', 'UTF8'),
    CASE WHEN g % 100 = 0 THEN 'dead' ELSE 'processed' END, 1, NULL, now()
FROM generate_series(1, $1) AS g
"""


def seed(url: str, events: int) -> float:
    async def run() -> float:
        started = time.monotonic()
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(SEED, events)
            await connection.execute("ANALYZE webhook_events")
        finally:
            await connection.close()
        return time.monotonic() - started

    return asyncio.run(run())


def timed(client: httpx.Client, path: str, params: dict[str, Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchFailure(f"{path} {params}: {response.status_code} {response.text[:200]}")
    return samples


def deep_cursor(client: httpx.Client, params: dict[str, Any], depth: int) -> str:
    cursor: str | None = None
    for _ in range(depth):
        page = client.get(
            "/api/v1/events", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        cursor = page.json()["next_cursor"]
        if cursor is None:
            raise BenchFailure(f"list {params} ended before page {depth}")
    assert cursor is not None
    return cursor


def cases(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], int]]:
    """(name, query, pages walked first): first pages, and pages deep into filtered lists."""
    dead_depth = max(1, min(args.depth, args.events // 100 // 50 - 1))
    return [
        ("first page", {"limit": 50}, 0),
        ("first page, event_type", {"limit": 50, "event_type": "bills.write.unsuccessful"}, 0),
        ("first page, company_id", {"limit": 50, "company_id": "company-7"}, 0),
        ("first page, status=dead", {"limit": 50, "status": "dead"}, 0),
        (
            f"page {args.depth + 1}, event_type",
            {"limit": 50, "event_type": "read.completed"},
            args.depth,
        ),
        (f"page {dead_depth + 1}, status=dead", {"limit": 50, "status": "dead"}, dead_depth),
    ]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def receive_full_and_empty(
    full: str, args: argparse.Namespace, workdir: Path
) -> dict[str, list[float]]:
    """Events/s into the full database and a fresh empty one, full, empty, empty, full
    (ABBA: drift on a shared machine cancels); the empty one is dropped afterwards."""
    empty = PostgresDatabase(args.pg_admin_url)
    receive: dict[str, list[float]] = {"full": [], "empty": []}
    try:
        upgrade(empty.url)
        for index, label in enumerate(("full", "empty", "empty", "full")):
            url = full if label == "full" else empty.url
            with server("service", url, workdir / f"recv-{label}-{index}.log") as running:
                result = load(running, args, workdir / f"recv-{label}-{index}.json", args.seconds)
            receive[label].append(result["events_per_s"])
            print(
                f"  receive into {label:<5} table: {result['events_per_s']:,.0f} events/s, "
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms",
                flush=True,
            )
    finally:
        empty.drop()
    return receive


def benchmark(args: argparse.Namespace) -> None:
    os.environ["STATUS_API_TOKENS"] = TOKEN
    full = PostgresDatabase(args.pg_admin_url)
    try:
        upgrade(full.url)
        print(f"seeding {args.events:,} events ...", flush=True)
        print(f"  seeded in {seed(full.url, args.events):.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
            workdir = Path(tmp)
            rows: list[tuple[str, list[float]]] = []
            with server("service", full.url, workdir / "api.log") as running:
                base = running.url.removesuffix("/webhooks/codat")
                headers = {"Authorization": f"Bearer {TOKEN}"}
                with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                    for name, params, depth in cases(args):
                        if depth:
                            cursor = deep_cursor(client, params, depth)
                            params = {**params, "cursor": cursor}
                        timed(client, "/api/v1/events", params, 20)  # warm
                        samples = timed(client, "/api/v1/events", params, args.requests)
                        rows.append((name, samples))
            print()
            print(f"GET /api/v1/events over {args.events:,} events, {args.requests} requests each")
            print(f"{'request':<42} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
            for name, samples in rows:
                print(
                    f"{name:<42} {percentile(samples, 0.5):>7.2f} "
                    f"{percentile(samples, 0.99):>7.2f} {statistics.fmean(samples):>8.2f}"
                )

            receive = receive_full_and_empty(full.url, args, workdir)
            full_rate = statistics.fmean(receive["full"])
            empty_rate = statistics.fmean(receive["empty"])
            print(
                f"receiving with {args.events:,} stored / with an empty table: "
                f"{full_rate:,.0f} / {empty_rate:,.0f} events/s = {full_rate / empty_rate:.2f}x"
            )
    finally:
        full.drop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.status_api")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--depth", type=int, default=400, help="pages walked before timing")
    parser.add_argument("--seconds", type=float, default=8.0, help="receive window per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    )
    run_main(benchmark, parser.parse_args(argv))


if __name__ == "__main__":
    main()
