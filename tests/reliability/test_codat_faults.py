"""Codat faults: the fake answering 500, 429 with Retry-After, and slower than the
client's time-out, in bursts, while pulls run; in the end every event is processed, the
local copy is right, and no call went out while a 429's Retry-After was running."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sandbox.fake_codat import FakeCall, FakeCodat
from tests.reliability.checks import (
    event_rows,
    job_statuses,
    local_copy_diff,
    summarize,
    wait_settled,
)
from tests.reliability.events import encode, new_delivery_id, read_completed
from tests.reliability.processes import Processes, service_env
from tests.reliability.report import Report, fmt, table
from tests.reliability.sender import Sender
from tests.reliability.sizes import SeededRandom, Size
from tests.reliability.world import World

pytestmark = pytest.mark.reliability

COMPANIES = 3
RECORDS = 20
TIMEOUT = 1.0  # CODAT_TIMEOUT_SECONDS
SLOW = TIMEOUT + 0.5  # a slow answer comes this late: past the client's time-out
FAULTED = "/data/"  # record reads: the pulls
# A call arriving this long after a 429 was sent after the client saw it (allows for a
# busy machine: the check is about obeying Retry-After, not about speed).
IN_FLIGHT = 1.0


@dataclass
class Burst:
    round: int
    kind: str
    times: int
    retry_after: int | None = None


def _inject(fake: FakeCodat, rng: SeededRandom, round_: int) -> Burst:
    kind = ("500", "429", "slow")[round_ % 3]
    if kind == "500":
        burst = Burst(round_ + 1, kind, rng.randint(3, 8))
        fake.fail_next(FAULTED, 500, times=burst.times)
    elif kind == "429":
        burst = Burst(round_ + 1, kind, rng.randint(1, 2), rng.choice((2, 3)))
        fake.fail_next(FAULTED, 429, times=burst.times, retry_after=burst.retry_after)
    else:
        burst = Burst(round_ + 1, kind, rng.randint(1, 3))
        fake.fail_next(FAULTED, 503, times=burst.times, delay=SLOW)
    return burst


def _calls_during_pauses(calls: list[FakeCall], retry_after: int) -> list[tuple[FakeCall, float]]:
    """Calls that arrived while a 429's Retry-After was running (after the in-flight grace)."""
    bad = []
    for refused in (c for c in calls if c.status == 429):
        for call in calls:
            after = (call.time - refused.time).total_seconds()
            if IN_FLIGHT < after < retry_after:
                bad.append((call, after))
    return bad


async def test_codat_faults_in_bursts_are_ridden_out(
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
        4,
        "Codat faults",
        f"{size.fault_rounds} rounds: each injects a burst of faults into the fake Codat's "
        "record reads (500s; 429s with Retry-After; answers slower than the client's "
        f"{TIMEOUT:g} s time-out), changes the companies' data and sends the read "
        "webhooks; the round ends when all the work is done.",
    )
    fake, codat_url = live_codat
    world = World(fake, rng)
    world.add_companies(COMPANIES, RECORDS)
    env = service_env(
        postgres_url,
        codat_url=codat_url,
        EMBEDDED_WORKER="true",
        CODAT_TIMEOUT_SECONDS=str(TIMEOUT),
        CODAT_PAGE_SIZE="5",
        WORKER_LEASE_SECONDS="10",
    )
    section.setup = [
        "`codat-webhooks serve` with its embedded worker on PostgreSQL, fake Codat on loopback",
        f"{COMPANIES} companies, {RECORDS} records per type to start, CODAT_PAGE_SIZE=5, "
        f"CODAT_TIMEOUT_SECONDS={TIMEOUT:g}, WORKER_RETRY_BASE_SECONDS=0.5",
        "the client retries a 5xx or a time-out 3 times, then the worker retries the job "
        "with backoff; a 429 pauses every call until Retry-After",
        f"random seed {rng.seed_value}",
    ]
    service = await processes.serve("serve", env)
    sender = Sender(service.webhook_url)
    bursts: list[Burst] = []
    unsettled_rounds: list[int] = []
    try:
        for round_ in range(size.fault_rounds):
            bursts.append(_inject(fake, rng, round_))
            events: list[dict[str, Any]] = []
            for company, connection in world.companies.items():
                types = list(world.data_types)
                if round_ > 0:
                    types = rng.sample(types, rng.randint(1, 2))
                    for data_type in types:
                        world.change(
                            company, data_type, new=rng.randint(5, 12), updated=2, deleted=1
                        )
                modified = {t: t in types for t in world.data_types}
                events.append(read_completed(company, connection, modified, initial=round_ == 0))
            await asyncio.gather(
                *(
                    sender.deliver(sender.new(new_delivery_id(), encode(e), e["eventType"]))
                    for e in events
                )
            )
            if not await wait_settled(engine, within=120, quiet=1.0):
                unsettled_rounds.append(round_ + 1)
    finally:
        await sender.aclose()

    rows = await event_rows(engine)
    jobs = await job_statuses(engine, "pull")
    compared, problems = await local_copy_diff(engine, world)
    calls = fake.calls
    answered = Counter(c.status for c in calls if FAULTED in c.path)
    injected = Counter[str]()
    for burst in bursts:
        injected[burst.kind] += burst.times
    seen_at_fake = {"500": answered[500], "429": answered[429], "slow": answered[503]}
    service_saw: Counter[str] = Counter()
    for labels, value in (await service.metric_values("codat_api_calls_total")).items():
        status = labels.rsplit('status="', 1)[-1].split('"', 1)[0]
        service_saw[status] += int(value)
    retry_afters = [b.retry_after for b in bursts if b.retry_after]
    during_pause = _calls_during_pauses(calls, min(retry_afters)) if retry_afters else []

    section.add_sent("read webhooks", len(sender.deliveries))
    section.add_sent(
        "faults injected", ", ".join(f"{k}: {fmt(injected[k])}" for k in ("500", "429", "slow"))
    )
    section.add_sent("record changes in the fake Codat", world.changes)
    section.add_seen(
        "faults the fake Codat served",
        ", ".join(f"{k}: {fmt(v)}" for k, v in seen_at_fake.items()),
    )
    section.add_seen(
        "calls to Codat by outcome, as the service counted them (/metrics)",
        ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(service_saw.items())),
    )
    section.add_seen("calls the fake Codat received", len(calls))
    section.add_seen("pull jobs", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(jobs.items())))
    section.add_seen("records compared with the local copy", compared)
    section.details = [
        "The bursts:",
        "",
        *table(
            ["round", "fault", "how many", "Retry-After"],
            [[b.round, b.kind, b.times, b.retry_after or "-"] for b in bursts],
        ),
    ]

    section.check(
        "every injected fault was served (the bursts hit the pulls)",
        seen_at_fake == {k: injected[k] for k in ("500", "429", "slow")},
        f"injected {dict(injected)}, served {seen_at_fake}",
    )
    section.check(
        "the service saw each 500 and 429, and timed out on each slow answer",
        service_saw["500"] == injected["500"]
        and service_saw["429"] == injected["429"]
        and service_saw["error"] >= injected["slow"],
        f"500: {service_saw['500']}, 429: {service_saw['429']}, "
        f"time-outs and errors: {service_saw['error']}",
    )
    section.check(
        f"no call to Codat while a 429's Retry-After ran (after {IN_FLIGHT:g} s for calls "
        "already in flight)",
        not during_pause,
        "; ".join(f"{c.method} {c.path} {t:.2f} s after a 429" for c, t in during_pause[:3]),
    )
    section.check(
        "every round finished without help (waited up to 120 s each)",
        not unsettled_rounds,
        f"rounds {unsettled_rounds} did not" if unsettled_rounds else "",
    )
    not_processed = [r for r in rows.values() if r.status != "processed"]
    section.check(
        "every webhook acknowledged, stored and processed",
        all(d.acknowledged for d in sender.deliveries)
        and len(rows) == len(sender.deliveries)
        and not not_processed,
        f"{len(not_processed)} not processed" if not_processed else "",
    )
    section.check(
        "every pull job done in the end; none dead", set(jobs) == {"done"}, str(dict(jobs))
    )
    section.check(
        "the local copy equals the fake Codat's records",
        not problems and compared == world.record_count(),
        summarize(problems) or f"{fmt(compared)} records",
    )
    section.headline = (
        f"{fmt(sum(injected.values()))} faults injected "
        f"({', '.join(f'{k} {injected[k]}' for k in ('500', '429', 'slow'))}): "
        f"{fmt(len(rows))} events processed, {fmt(compared)} records equal to Codat's"
    )
    section.finish()
