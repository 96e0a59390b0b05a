"""Worker crashes: worker processes killed with SIGKILL at random moments of multi-page
pulls, again and again; in the end every event is processed and the local copy equals
the fake Codat's data."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Job, WebhookEvent
from app.sandbox.fake_codat import FakeCodat
from tests.conftest import count_rows
from tests.reliability.checks import (
    event_rows,
    job_statuses,
    local_copy_diff,
    stored_once,
    summarize,
    wait_settled,
)
from tests.reliability.events import encode, new_delivery_id, read_completed
from tests.reliability.processes import ManagedProcess, Processes, service_env
from tests.reliability.report import Report, fmt, table
from tests.reliability.sender import Sender
from tests.reliability.sizes import SeededRandom, Size
from tests.reliability.world import World

pytestmark = pytest.mark.reliability

COMPANIES = 4
INITIAL_RECORDS = 16  # per company and type: 8 pages of 2
PAGE_DELAY = 0.05  # every answer of the fake Codat waits this long


@dataclass
class Kill:
    round: int
    worker: str
    pull: str
    delay: float
    orphaned_jobs: int
    orphaned_events: int
    records_then: int


def _pid_of(worker_id: str) -> int:
    """Worker ids are `host:pid:random`."""
    return int(worker_id.rsplit(":", 2)[1])


async def _pull_in_flight(
    engine: AsyncEngine, pids: set[int], within: float
) -> tuple[int, str] | None:
    """(pid, job key) of a pull a live worker holds right now, or None if none comes."""
    deadline = time.monotonic() + within
    query = select(Job.locked_by, Job.key).where(
        Job.kind == "pull", Job.status == "processing", Job.locked_until > func.now()
    )
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            held = [
                (_pid_of(locked_by), key)
                for locked_by, key in (await connection.execute(query)).all()
                if locked_by
            ]
        live = [(pid, key) for pid, key in held if pid in pids]
        if live:
            return live[0]
        await asyncio.sleep(0.02)
    return None


async def _orphaned(engine: AsyncEngine, pid: int) -> tuple[int, int]:
    """Jobs and events still marked as held by a worker that no longer exists."""
    pattern = f"%:{pid}:%"
    async with engine.connect() as connection:
        jobs = await connection.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.status == "processing", Job.locked_by.like(pattern))
        )
        events = await connection.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.status == "processing", WebhookEvent.locked_by.like(pattern))
        )
    return int(jobs or 0), int(events or 0)


async def test_workers_killed_mid_pull_lose_nothing_and_the_copy_matches_codat(
    size: Size,
    reliability_report: Report,
    rng: SeededRandom,
    processes: Processes,
    live_codat: tuple[FakeCodat, str],
    postgres_url: str,
    postgres_engine: AsyncEngine,
) -> None:
    engine = postgres_engine
    section = reliability_report.section(
        3,
        "Worker crashes",
        f"Two `codat-webhooks worker` processes share PostgreSQL behind a `serve` receiver. "
        f"{size.kills} times, Codat's data changes, its read webhooks arrive over HTTP, and "
        "as soon as a worker holds a multi-page pull the suite waits a random moment and "
        "kills that worker with SIGKILL, then starts a new one. Each round ends when all "
        "the work is done (so Codat's data never changes under a running pull).",
    )
    fake, codat_url = live_codat
    fake.delay_all = PAGE_DELAY
    world = World(fake, rng)
    world.add_companies(COMPANIES, INITIAL_RECORDS)
    env = service_env(
        postgres_url,
        codat_url=codat_url,
        EMBEDDED_WORKER="false",
        CODAT_PAGE_SIZE="2",
        WORKER_LEASE_SECONDS="2",
        WORKER_POLL_INTERVAL="0.05",
        WORKER_CONCURRENCY="8",
    )
    section.setup = [
        f"{COMPANIES} companies, {len(world.data_types)} data types "
        f"({', '.join(world.data_types)}), {INITIAL_RECORDS} records each to start with",
        f"CODAT_PAGE_SIZE=2, every fake Codat answer delayed {PAGE_DELAY} s: a pull is many pages",
        "WORKER_LEASE_SECONDS=2: what a dead worker held is claimed again 2 s later",
        f"random seed {rng.seed_value}",
    ]
    receiver = await processes.serve("receiver", env)
    workers: dict[int, ManagedProcess] = {
        slot: processes.worker(f"worker-{slot}-0", env) for slot in (0, 1)
    }
    sender = Sender(receiver.webhook_url)
    kills: list[Kill] = []
    unsettled_rounds: list[int] = []
    no_pull_seen = 0

    try:
        for round_ in range(size.kills):
            events: list[dict[str, Any]] = []
            for company, connection in world.companies.items():
                if round_ == 0:
                    types = list(world.data_types)
                else:
                    types = rng.sample(list(world.data_types), rng.randint(1, 2))
                    for data_type in types:
                        world.change(
                            company,
                            data_type,
                            new=rng.randint(8, 16),
                            updated=rng.randint(1, 3),
                            deleted=rng.randint(0, 1),
                        )
                modified = {t: t in types for t in world.data_types}
                events.append(read_completed(company, connection, modified, initial=round_ == 0))
            await asyncio.gather(
                *(
                    sender.deliver(sender.new(new_delivery_id(), encode(e), e["eventType"]))
                    for e in events
                )
            )
            pids = {w.pid: slot for slot, w in workers.items()}
            found = await _pull_in_flight(engine, set(pids), within=30)
            if found is None:
                no_pull_seen += 1
                pid, pull = rng.choice(sorted(pids)), "(none seen)"
            else:
                pid, pull = found
            delay = rng.uniform(0, 0.4)
            await asyncio.sleep(delay)
            slot = pids[pid]
            victim = workers[slot]
            victim.kill()
            jobs, held_events = await _orphaned(engine, pid)
            kills.append(
                Kill(
                    round_ + 1,
                    victim.name,
                    pull,
                    delay,
                    jobs,
                    held_events,
                    await count_rows(engine, "records"),
                )
            )
            workers[slot] = processes.worker(f"worker-{slot}-{round_ + 1}", env)
            if not await wait_settled(engine, within=90):
                unsettled_rounds.append(round_ + 1)
    finally:
        await sender.aclose()

    rows = await event_rows(engine)
    jobs_by_status = await job_statuses(engine, "pull")
    compared, problems = await local_copy_diff(engine, world)
    async with engine.connect() as db:
        reclaimed = await db.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == "pull", or_(Job.attempts > 1, Job.rerun.is_(True)))
        )
    pages = len([c for c in fake.calls if "/data/" in c.path])

    section.add_sent("read webhooks", len(sender.deliveries))
    section.add_sent("record changes in the fake Codat (created, updated, deleted)", world.changes)
    section.add_sent("SIGKILLs", len(kills))
    section.add_seen("pages served by the fake Codat", pages)
    section.add_seen("records in the fake Codat at the end", world.record_count())
    section.add_seen("records compared with the local copy", compared)
    section.add_seen(
        "pull jobs", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(jobs_by_status.items()))
    )
    section.add_seen("pull jobs claimed more than once at the end", int(reclaimed or 0))
    section.add_seen(
        "event claims",
        ", ".join(
            f"{k}: {fmt(v)}" for k, v in sorted(Counter(r.attempts for r in rows.values()).items())
        ),
    )
    section.details = [
        "The kills:",
        "",
        *table(
            [
                "#",
                "worker killed",
                "pull it held",
                "killed after",
                "jobs left held",
                "events left held",
                "local records then",
            ],
            [
                [
                    k.round,
                    k.worker,
                    f"`{k.pull}`",
                    f"{k.delay:.2f} s",
                    k.orphaned_jobs,
                    k.orphaned_events,
                    k.records_then,
                ]
                for k in kills
            ],
        ),
    ]

    section.check(
        f"{size.kills} workers were killed with SIGKILL, each while it held a pull",
        len(kills) == size.kills and no_pull_seen == 0,
        f"{no_pull_seen} kill(s) found no pull in flight" if no_pull_seen else "",
    )
    interrupted = sum(1 for k in kills if k.orphaned_jobs > 0)
    section.check(
        "kills interrupted pulls in the middle (work left held by a dead worker)",
        interrupted > 0,
        f"{interrupted} of {len(kills)} kills",
    )
    section.check(
        "every round finished without help (waited up to 90 s each)",
        not unsettled_rounds,
        f"rounds {unsettled_rounds} did not" if unsettled_rounds else "",
    )
    stored = stored_once(sender.deliveries, rows)
    section.check(
        "every webhook acknowledged and stored once",
        all(d.acknowledged for d in sender.deliveries)
        and not stored
        and len(rows) == len(sender.deliveries),
        summarize(stored),
    )
    not_processed = [r for r in rows.values() if r.status != "processed"]
    section.check(
        "every event processed",
        not not_processed,
        f"{len(not_processed)} not processed" if not_processed else "",
    )
    section.check(
        "every pull job done; none dead or left behind",
        set(jobs_by_status) == {"done"},
        str(dict(jobs_by_status)),
    )
    section.check(
        "the local copy equals the fake Codat's records: same ids, same content, deletions seen",
        not problems and compared == world.record_count(),
        summarize(problems) or f"{fmt(compared)} records",
    )
    section.headline = (
        f"{len(kills)} SIGKILLs ({interrupted} mid-pull), {fmt(len(rows))} events processed, "
        f"{fmt(compared)} records equal to Codat's"
    )
    section.finish()
