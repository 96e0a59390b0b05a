"""Load: distinct events at a steady rate, 5% duplicate deliveries mixed in.

Afterwards every acknowledged event is stored once (byte for byte) and processed once,
and the local copy the pulls built equals the fake Codat's data.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sandbox.fake_codat import FakeCodat
from tests.reliability.checks import (
    event_rows,
    job_statuses,
    local_copy_diff,
    stored_once,
    summarize,
    wait_settled,
)
from tests.reliability.events import (
    connection_event,
    encode,
    new_delivery_id,
    read_completed,
    unknown_event,
    write_event,
)
from tests.reliability.processes import Processes, service_env
from tests.reliability.report import Report, fmt
from tests.reliability.sender import Delivery, Sender, at_steady_rate
from tests.reliability.sizes import SeededRandom, Size
from tests.reliability.world import World

pytestmark = pytest.mark.reliability

COMPANIES = 6
RECORDS_PER_TYPE = 9
# What a Bill Pay customer's Codat sends most: reads, then write outcomes.
MIX = (
    ("read.completed", 50),
    ("bills.write.successful", 20),
    ("bills.write.unsuccessful", 5),
    ("connection.*", 10),
    ("unknown type", 15),
)


def make_event(kind: str, world: World, rng: SeededRandom, n: int) -> dict[str, Any]:
    company = rng.choice(sorted(world.companies))
    connection = world.companies[company]
    if kind == "read.completed":
        modified = {t: rng.random() < 0.5 for t in world.data_types}
        return read_completed(company, connection, modified)
    if kind == "bills.write.successful":
        return write_event(company, connection, f"10000000-0000-4000-8000-{n:012}")
    if kind == "bills.write.unsuccessful":
        key = f"20000000-0000-4000-8000-{n:012}"
        world.fake.add_push_operation(
            company,
            key=key,
            data_type="bills",
            status="Failed",
            requested=datetime.now(UTC),
            error_message="Supplier is archived in the accounting software",
        )
        return write_event(company, connection, key, successful=False)
    if kind == "connection.*":
        return connection_event(company, connection, connected=rng.random() < 0.5)
    return unknown_event(company)


async def test_steady_load_with_duplicates_is_stored_once_and_processed_once(
    size: Size,
    reliability_report: Report,
    rng: SeededRandom,
    processes: Processes,
    live_codat: tuple[FakeCodat, str],
    postgres_url: str,
    postgres_engine: AsyncEngine,
) -> None:
    section = reliability_report.section(
        1,
        "Load",
        f"Distinct signed events at a steady {size.load_rate:g}/s for {size.load_seconds:g} s, "
        f"with {size.duplicate_share:.0%} duplicate deliveries mixed in (half of them racing "
        "the original), posted over HTTP to one `serve` process with its embedded worker on "
        "PostgreSQL; then the suite waits for the worker to finish and reads the tables.",
    )
    fake, codat_url = live_codat
    world = World(fake, rng)
    world.add_companies(COMPANIES, RECORDS_PER_TYPE)
    env = service_env(
        postgres_url, codat_url=codat_url, EMBEDDED_WORKER="true", CODAT_PAGE_SIZE="5"
    )
    service = await processes.serve("serve", env)
    section.setup = [
        "`codat-webhooks serve` (uvicorn, one process, embedded worker), PostgreSQL "
        "(a fresh database on the test server), fake Codat on loopback",
        f"{COMPANIES} companies in the fake Codat, {len(world.data_types)} data types each "
        f"({', '.join(world.data_types)}), {RECORDS_PER_TYPE} records per type, page size 5",
        "event mix: " + ", ".join(f"{kind} {weight}%" for kind, weight in MIX),
        f"random seed {rng.seed_value} (RELIABILITY_SEED replays it)",
    ]

    sender = Sender(service.webhook_url)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    originals: list[Delivery] = []
    duplicates = racing = 0

    async def send(i: int) -> None:
        nonlocal duplicates, racing
        if originals and rng.random() < size.duplicate_share:
            duplicates += 1
            if rng.random() < 0.5:
                racing += 1  # the newest one, most likely still in flight
                original = originals[-1]
            else:
                original = rng.choice(originals)
            copy = sender.new(original.delivery_id, original.body, original.kind + " (again)")
            await sender.deliver(copy)
            return
        kind = rng.choices(kinds, weights)[0]
        delivery = sender.new(new_delivery_id(), encode(make_event(kind, world, rng, i)), kind)
        originals.append(delivery)
        await sender.deliver(delivery)

    try:
        pace = await at_steady_rate(size.load_rate, size.load_seconds, send)
        settled = await wait_settled(postgres_engine, within=180)
        # Then the SMBs link again: a disconnected company is not pulled, and what it
        # missed is caught up by the reconcile that connection.reconnected starts.
        for company, connection in sorted(world.companies.items()):
            body = connection_event(
                company, connection, connected=True, event_type="connection.reconnected"
            )
            relink = sender.new(new_delivery_id(), encode(body), "connection.reconnected")
            originals.append(relink)
            await sender.deliver(relink)
        settled = await wait_settled(postgres_engine, within=180) and settled
    finally:
        await sender.aclose()
    rows = await event_rows(postgres_engine)
    jobs = await job_statuses(postgres_engine, "pull")
    compared, copy_problems = await local_copy_diff(postgres_engine, world)
    ready = await service.get("/readyz")

    answers = sender.answer_counts()
    latency = sender.latency_ms()
    section.add_sent("distinct events", len(originals))
    section.add_sent("duplicate deliveries", f"{duplicates} ({racing} racing the original)")
    section.add_sent("requests (with retries)", sum(answers.values()))
    section.add_sent(
        "pace",
        f"{pace.planned / pace.seconds:.1f}/s over {pace.seconds:.1f} s "
        f"({pace.late} starts > 100 ms late)",
    )
    section.add_sent("events by type", ", ".join(f"{k} {fmt(v)}" for k, v in _kinds(originals)))
    section.add_seen("answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())))
    section.add_seen(
        "answer bodies",
        ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(_outcomes(sender.deliveries).items())),
    )
    if latency:
        section.add_seen("latency (ms)", ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))
    section.add_seen("rows in webhook_events", len(rows))
    section.add_seen(
        "event statuses", ", ".join(f"{k} {fmt(v)}" for k, v in _statuses(rows).items())
    )
    section.add_seen("pull jobs", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(jobs.items())))
    section.add_seen("records compared with the fake Codat", compared)
    section.add_seen("calls the fake Codat answered", len(fake.calls))

    unacknowledged = [d.delivery_id for d in sender.deliveries if not d.acknowledged]
    section.check(
        "every delivery got a 2xx",
        not unacknowledged,
        f"{len(unacknowledged)} without: {unacknowledged[:3]}" if unacknowledged else "",
    )
    errors = {k: v for k, v in answers.items() if k != "200"}
    section.check(
        "no answer other than 200 under steady load (no 5xx, no retries needed)",
        not errors,
        str(errors) if errors else "",
    )
    problems = stored_once(sender.deliveries, rows)
    section.check(
        "every acknowledged event is in webhook_events exactly once, byte for byte",
        not problems and len(rows) == len(originals),
        summarize(problems) or f"{len(rows)} rows for {len(originals)} events",
    )
    twice = [d for d in originals if _stored_answers(sender.deliveries, d.delivery_id) != 1]
    section.check(
        "each delivery id was answered `stored` once; every repeat `duplicate`",
        not twice,
        f"{len(twice)} ids with another count" if twice else "",
    )
    section.check("the worker finished every event and pull (waited up to 180 s)", settled)
    not_once = [r for r in rows.values() if r.attempts != 1]
    wrong_status = [
        r
        for r in rows.values()
        if r.status != ("ignored" if r.event_type == "expenses.sync.completed" else "processed")
    ]
    section.check(
        "every event processed once: status processed (ignored for the unknown type), "
        "claimed exactly once",
        not not_once and not wrong_status,
        f"{len(wrong_status)} with another status, {len(not_once)} claimed more than once"
        if not_once or wrong_status
        else "",
    )
    section.check(
        "no pull job dead or left undone",
        set(jobs) <= {"done"},
        str(dict(jobs)),
    )
    section.check(
        "the local copy equals the fake Codat's records (every company and type)",
        not copy_problems and compared > 0,
        summarize(copy_problems),
    )
    section.check("/readyz still answers 200", ready.status_code == 200, ready.text[:200])
    section.headline = (
        f"{fmt(len(originals))} events + {fmt(duplicates)} duplicates at "
        f"{size.load_rate:g}/s for {size.load_seconds:g} s: "
        f"{fmt(len(rows))} rows, {fmt(sum(1 for r in rows.values() if r.attempts == 1))} "
        f"processed once; p99 {latency.get('p99', 0):.0f} ms"
    )
    section.finish()


def _kinds(deliveries: list[Delivery]) -> list[tuple[str, int]]:
    return sorted(Counter(d.kind for d in deliveries).items())


def _outcomes(deliveries: list[Delivery]) -> Counter[str]:
    return Counter(a.outcome for d in deliveries for a in d.attempts)


def _statuses(rows: dict[str, Any]) -> dict[str, int]:
    return dict(sorted(Counter(r.status for r in rows.values()).items()))


def _stored_answers(deliveries: list[Delivery], delivery_id: str) -> int:
    return sum(d.stored_answers for d in deliveries if d.delivery_id == delivery_id)
