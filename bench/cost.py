"""Cost benchmark: the Codat calls the service spends in a simulated day, against the least.

    .venv/bin/python -m bench.cost [--companies 1000] [--records 200] [--database sqlite]

Codat's daily quota is what the service spends. One process: the fake Codat
(`app/sandbox/fake_codat.py`) served on loopback by `run_fake_codat` in a thread, the
service's own `Worker(ctx).run_until_idle()` in-process, events stored through
`EventWriter` as the webhook route stores them, on a fresh database (a temp SQLite file,
or `--database postgresql`: `CREATE DATABASE bench_cost_<random>`, dropped after). Every
setting is the service's default (or its environment variable), except the Codat base URL.

Simulated time. One clock, shared by the service's Context and the fake, moves only when
the driver moves it: to the next simulated action or the next due job, whichever comes
first, and the worker then runs until idle. Processing takes no simulated time, so a slow
step on a busy machine cannot split a burst of writes or shift a schedule.

The day (all random choices from `--seed`):

- Each company has a daily Codat sync at a random second of the day (t_i). Yesterday's
  sync was the initial read (`read.completed.initial`, all 7 Bill Pay types pulled):
  that is the setup, at t_i - 24h, its calls reported apart. Today, just before t_i, 5%
  of the company's list records change in the source; at t_i Codat reads all 7 types
  (their data status moves ahead) and sends `read.completed` with `recordsModified`
  true for the types with changes. For 1% of companies that webhook never arrives.
- 100 successful bill writes in bursts (20 bursts of 5, 5 s apart, one company each):
  a Success push operation in the fake and a `bills.write.successful` webhook each.
- Codat answers each queued refresh (`POST /data/queue/{type}`) by reading that type
  `--sync-minutes` later (5): written records reach its cache, its data status moves,
  and a `read.completed` for that type is delivered, `recordsModified` as it happened.
- The service's sweep (every SWEEP_INTERVAL) and reconcile (every RECONCILE_INTERVAL per
  company, queued by the sweep) run as they would; the first sweep is at midnight.

The least that does the same work, as the issue defines it: one list call per page of
changed records (`ceil(n / 5000)`, Codat's largest page) per (company, data type) read
that changed records, missed webhooks included; one refresh per burst of writes; one
data-status read per reconcile the schedule implies (companies x 24h / RECONCILE_INTERVAL).
Everything the fake received during the day is counted by kind; what the least has no
line for (push-operation lists, sweep refreshes, pulls that found nothing) is printed on
its own line, and the ratio is given both like for like and for all calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.codat.client import MAX_PAGE_SIZE, CodatClient
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.codat.events import parse_datetime
from app.codat.gate import PauseGate
from app.config import Settings
from app.db import create_engine, session_factory
from app.migrate import upgrade
from app.models import Company, Job, Record, WebhookEvent
from app.processing.context import Context
from app.processing.queue import enqueue_job
from app.processing.sweep import SWEEP, SWEEP_KEY
from app.processing.worker import Worker
from app.sandbox.fake_codat import (
    LIST_PATHS,
    FakeCall,
    FakeCodat,
    iso,
    make_account,
    make_bank_account,
    make_bill,
    make_bill_credit_note,
    make_bill_payment,
    make_payment_method,
    make_supplier,
    make_tax_rate,
    make_tracking_category,
    run_fake_codat,
)
from app.webhooks.route import incoming_event
from app.webhooks.store import EventWriter
from bench.receive import DEFAULT_PG_ADMIN_URL

API_KEY = "bench-cost-api-key"
SECRET = "whsec_YmVuY2gtY29zdC1zZWNyZXQtbm90LWZvci1wcm9k"
DAY = timedelta(days=1)
SHM = Path("/dev/shm")  # noqa: S108 (a private directory is made inside it)
TMPFS = str(SHM) if SHM.is_dir() else None
BILL_PAY = BILL_PAY_DATA_TYPES["async"]  # the 10 types a read.completed lists
RecordBuilder = Callable[[str], dict[str, Any]]
# Records per company of each list type, as a share of --records (the bills); `company`
# (the profile, /data/info) is one object and never changes here.
LIST_TYPES: dict[str, tuple[float, RecordBuilder]] = {
    "bills": (1.0, make_bill),
    "billPayments": (0.5, make_bill_payment),
    "chartOfAccounts": (0.15, make_account),
    "suppliers": (0.1, make_supplier),
    "paymentMethods": (0.015, make_payment_method),
    "bankAccounts": (0.01, make_bank_account),
    "billCreditNotes": (0.05, make_bill_credit_note),
    "taxRates": (0.005, make_tax_rate),
    "trackingCategories": (0.005, make_tracking_category),
}
SEGMENT_TYPES = {**LIST_PATHS, "info": "company"}

# Call kinds, in table order.
CHANGED, NOTHING_NEW = "list: pages of changed records", "list: pulls that found nothing new"
STATUS, REFRESH_WRITE = "dataStatus (reconcile)", "queue refresh: write bursts"
PUSH_LIST, PUSH_GET = "push list (reconcile)", "push get"
REFRESH_SWEEP, REFRESH_OTHER, OTHER = "queue refresh: sweep", "queue refresh: other", "other"
LIKE_FOR_LIKE = (CHANGED, NOTHING_NEW, STATUS, REFRESH_WRITE)
EXTRA = (PUSH_LIST, PUSH_GET, REFRESH_SWEEP, REFRESH_OTHER, OTHER)


class SimClock:
    """Simulated time that moves only when the driver moves it (never backwards)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


@dataclass
class SimCompany:
    index: int
    id: str
    connection: str
    read_at: timedelta  # today's daily sync, from midnight
    missed: bool = False
    records: dict[str, list[str]] = field(default_factory=dict)  # list type -> ids


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    refresh_409: int = 0
    sweep_refresh_why: Counter[str] = field(default_factory=Counter)
    least_pages: int = 0
    changed_reads: int = 0  # (company, type) reads that changed records
    changed_records: int = 0
    status_minutes: Counter[str] = field(default_factory=Counter)  # dataStatus calls by HH:MM


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failed_work() -> float:
    """Events and jobs the worker retried or gave up on (none expected)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "codat_work_processed"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") in ("retry", "dead")
    )


def metrics_snapshot() -> dict[str, float]:
    return {
        "refresh_write": metric("codat_refreshes_requested_total", reason="write"),
        "refresh_sweep": metric("codat_refreshes_requested_total", reason="sweep"),
        "reconciles": metric(
            "codat_work_processed_total", queue="jobs", kind="reconcile", outcome="done"
        ),
        "missed_reads": metric("codat_missed_webhooks_total", kind="read.completed"),
        "missed_writes": metric("codat_missed_webhooks_total", kind="write"),
        "retries": failed_work(),
    }


class Simulation:
    def __init__(
        self,
        args: argparse.Namespace,
        engine: AsyncEngine,
        fake: FakeCodat,
        base_url: str,
        day_start: datetime,
    ) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.engine = engine
        self.fake = fake
        self.day_start = day_start
        self.clock = SimClock(day_start - DAY)
        fake.now = self.clock
        self.settings = Settings(
            database_url=str(engine.url),
            codat_webhook_secrets=[SECRET],
            codat_api_key=API_KEY,
            codat_base_url=base_url,
            embedded_worker=False,
        )
        client = CodatClient(
            api_key=API_KEY,
            base_url=base_url,
            gate=PauseGate(self.clock),
            clock=self.clock,
            timeout=self.settings.codat_timeout_seconds,
            max_concurrency=self.settings.codat_max_concurrency,
            page_size=self.settings.codat_page_size,
        )
        self.sessions = session_factory(engine)
        self.ctx = Context(
            sessions=self.sessions, codat=client, settings=self.settings, clock=self.clock
        )
        self.worker = Worker(self.ctx, worker_id="bench-cost")
        self.writer = EventWriter(engine)
        self.actions: list[tuple[datetime, int, Callable[[], Awaitable[None]]]] = []
        self.sequence = itertools.count()
        self.companies: list[SimCompany] = []
        self.by_id: dict[str, SimCompany] = {}
        # Source changes Codat has not read yet, and changes in Codat's cache not yet listed.
        self.pending: defaultdict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.unlisted: Counter[tuple[str, str]] = Counter()
        self.pull_class: dict[tuple[str, str], str] = {}
        # What Codat's cache holds: (company, type) -> record id -> modifiedDate.
        self.cache: defaultdict[tuple[str, str], dict[str, datetime | None]] = defaultdict(dict)
        self.in_flight: set[tuple[str, str]] = set()  # refreshes Codat is working on
        self.last_delivered_read: dict[tuple[str, str], datetime] = {}
        self.bursts: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        self.calls_seen = 0
        self.counting: Tally | None = None
        self.setup = Tally()
        self.day = Tally()
        self.write_number = itertools.count()
        self.bursts_planned = 0
        self.setup_metrics: dict[str, float] = {}
        self.day_metrics: dict[str, float] = {}
        self.behind = (0, 0)
        self.started = time.monotonic()

    # -- the driver's timeline ------------------------------------------------------------

    def at(self, moment: datetime, action: Callable[[], Awaitable[None]]) -> None:
        heapq.heappush(self.actions, (moment, next(self.sequence), action))

    async def next_due(self) -> datetime | None:
        async with self.sessions() as session:
            job = await session.scalar(
                select(func.min(Job.next_attempt_at)).where(Job.status == "pending")
            )
            event = await session.scalar(
                select(func.min(WebhookEvent.next_attempt_at)).where(
                    WebhookEvent.status == "pending"
                )
            )
        due = [moment for moment in (job, event) if moment is not None]
        return min(due) if due else None

    async def run_until(self, end: datetime | None, progress: str) -> None:
        """Step to the next action or due job, act, run the worker until idle; repeat."""
        last_hour = -1
        stuck = 0
        while True:
            due = await self.next_due()
            candidates = [m for m in (due, self.actions[0][0] if self.actions else None) if m]
            if not candidates:
                return
            moment = min(candidates)
            if end is not None and moment >= end:
                return
            acting = bool(self.actions) and self.actions[0][0] <= moment
            stuck = stuck + 1 if moment <= self.clock.now and not acting else 0
            if stuck > 1000:
                raise RuntimeError(f"no progress at {self.clock.now}: a due item is not claimed")
            self.clock.advance_to(moment)
            while self.actions and self.actions[0][0] <= self.clock.now:
                _, _, action = heapq.heappop(self.actions)
                await action()
            await self.worker.run_until_idle()
            self.scan_calls()
            hour = int((self.clock.now - self.day_start + DAY).total_seconds() // 3600) % 24
            if hour != last_hour and hour % 6 == 0:
                last_hour = hour
                self.log(f"{progress}: {self.clock.now:%H:%M} simulated, calls {self.calls_seen}")

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f} s] {message}", file=sys.stderr, flush=True)

    # -- Codat's side ---------------------------------------------------------------------

    def add_companies(self) -> None:
        for index in range(self.args.companies):
            company = SimCompany(
                index=index,
                id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                connection=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                read_at=timedelta(seconds=self.rng.randrange(int(DAY.total_seconds()))),
            )
            self.fake.add_company(company.id, company.connection, name=f"Company {index}")
            for data_type, (share, builder) in LIST_TYPES.items():
                count = max(1, round(self.args.records * share))
                ids = [f"{data_type}-{i}" for i in range(count)]
                company.records[data_type] = ids
                self.pending[(company.id, data_type)] = [builder(record_id) for record_id in ids]
            self.companies.append(company)
            self.by_id[company.id] = company
        missed = round(self.args.companies * self.args.missed)
        for company in self.rng.sample(self.companies, missed):
            company.missed = True

    async def codat_reads(
        self, company: SimCompany, data_types: tuple[str, ...], *, event: str | None
    ) -> None:
        """Codat reads these types now: source changes reach its cache, statuses move."""
        now = self.clock.now
        items = []
        for data_type in data_types:
            key = (company.id, data_type)
            changes = self.pending.pop(key, [])
            for k, record in enumerate(changes):
                modified = now - timedelta(milliseconds=len(changes) - k)
                stored = self.fake.put_record(company.id, data_type, record, modified=modified)
                self.cache[key][stored["id"]] = parse_datetime(stored["modifiedDate"])
            self.fake.complete_sync(company.id, data_type)
            self.in_flight.discard(key)
            if changes:
                self.unlisted[key] += len(changes)
                if self.counting is not None:
                    self.counting.least_pages += math.ceil(len(changes) / MAX_PAGE_SIZE)
                    self.counting.changed_reads += 1
                    self.counting.changed_records += len(changes)
            items.append(
                {
                    "connectionId": company.connection,
                    "dataType": data_type,
                    "recordsModified": bool(changes),
                    "status": "Complete",
                    "issues": [],
                }
            )
            if event is not None:
                self.last_delivered_read[key] = now
        if event is not None:
            await self.deliver(
                {
                    "id": str(uuid.uuid4()),
                    "eventType": event,
                    "generatedDate": iso(now),
                    "payload": {
                        "referenceCompany": {"id": company.id, "name": f"Company {company.index}"},
                        "modifiedFromDate": iso(now),
                        "dataTypes": items,
                    },
                }
            )

    async def daily_read(self, company: SimCompany) -> None:
        """Today's sync: 5% of the company's list records changed since yesterday's."""
        population = [(t, record_id) for t, ids in company.records.items() for record_id in ids]
        changed = self.rng.sample(population, round(len(population) * self.args.modified))
        for data_type, record_id in changed:
            self.pending[(company.id, data_type)].append(LIST_TYPES[data_type][1](record_id))
        event = None if company.missed else "read.completed"
        await self.codat_reads(company, BILL_PAY, event=event)

    async def write(self, company: SimCompany) -> None:
        """A bill written through Codat: a Success push operation and its webhook."""
        now = self.clock.now
        number = next(self.write_number)
        key, bill_id = str(uuid.uuid4()), f"bill-w{number}"
        self.bursts[(company.id, "bills")].append(now)
        self.pending[(company.id, "bills")].append(make_bill(bill_id))
        self.fake.add_push_operation(
            company.id,
            key=key,
            data_type="bills",
            status="Success",
            requested=now - timedelta(seconds=2),
            completed=now,
            record_id=bill_id,
            connection_id=company.connection,
        )
        await self.deliver(
            {
                "id": str(uuid.uuid4()),
                "eventType": "bills.write.successful",
                "generatedDate": iso(now),
                "payload": {
                    "id": key,
                    "type": "Create",
                    "referenceCompany": {"id": company.id, "name": f"Company {company.index}"},
                    "connectionId": company.connection,
                    "requestedOnDate": iso(now - timedelta(seconds=2)),
                    "completedOnDate": iso(now),
                    "status": "Success",
                    "record": {"id": bill_id},
                    "attachmentId": None,
                },
            }
        )

    def codat_answers(self, company: SimCompany, data_type: str) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            """Codat finished the read a refresh queued (unless another read already did)."""
            if (company.id, data_type) in self.in_flight:
                await self.codat_reads(company, (data_type,), event="read.completed")

        return action

    async def deliver(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        await self.writer.store(incoming_event(f"msg_{uuid.uuid4().hex}", raw, self.clock.now))

    # -- counting -------------------------------------------------------------------------

    def scan_calls(self) -> None:
        calls = self.fake.calls
        new, self.calls_seen = calls[self.calls_seen :], len(calls)
        for call in new:
            kind = self.classify(call)
            if self.counting is not None:
                self.counting.calls[kind] += 1
                if kind == STATUS:
                    self.counting.status_minutes[f"{call.time:%H:%M}"] += 1
                if "refresh" in kind and call.status == 409:
                    self.counting.refresh_409 += 1

    def classify(self, call: FakeCall) -> str:
        parts = call.path.strip("/").split("/")
        company_id = parts[1] if len(parts) > 1 else ""
        if call.method == "POST" and len(parts) == 5 and parts[2:4] == ["data", "queue"]:
            return self.classify_refresh(call, company_id, parts[4])
        if call.method != "GET":
            return OTHER
        if parts[2:] == ["dataStatus"]:
            return STATUS
        if parts[2:] == ["push"]:
            return PUSH_LIST
        if len(parts) == 4 and parts[2] == "push":
            return PUSH_GET
        data_type = None
        if len(parts) == 4 and parts[2] == "data":
            data_type = SEGMENT_TYPES.get(parts[3])
        elif (
            len(parts) == 6 and parts[2] == "connections" and parts[4:] == ["data", "bankAccounts"]
        ):
            data_type = "bankAccounts"
        if data_type is None:
            return OTHER
        key = (company_id, data_type)
        if call.query.get("page", "1") == "1":  # a pull starts: did Codat change anything?
            self.pull_class[key] = CHANGED if self.unlisted.pop(key, 0) else NOTHING_NEW
        return self.pull_class.get(key, NOTHING_NEW)

    def classify_refresh(self, call: FakeCall, company_id: str, data_type: str) -> str:
        key = (company_id, data_type)
        company = self.by_id.get(company_id)
        if call.status == 200 and company is not None:
            self.in_flight.add(key)
            delay = timedelta(minutes=self.args.sync_minutes)
            self.at(call.time + delay, self.codat_answers(company, data_type))
        debounce = timedelta(seconds=self.settings.refresh_debounce_seconds)
        if any(
            call.time - debounce - timedelta(minutes=1) <= b <= call.time for b in self.bursts[key]
        ):
            return REFRESH_WRITE
        if company is None or self.counting is None:
            return REFRESH_OTHER
        read = self.last_delivered_read.get(key)
        if company.missed and (read is None or read < self.day_start):
            why = "types of a company whose daily read.completed was missed"
        elif read is not None and call.time - read < self.settings.freshness_max_age:
            why = "types read Complete within FRESHNESS_MAX_AGE, unpulled as recordsModified false"
        else:
            why = "types Codat last read over FRESHNESS_MAX_AGE ago (its sync came late)"
        self.counting.sweep_refresh_why[why] += 1
        return REFRESH_SWEEP

    # -- phases ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.writer.start()
        try:
            self.add_companies()
            self.log(f"{len(self.companies)} companies in the fake; setup (initial reads)")
            for company in self.companies:
                spread = round(self.rng.uniform(-60, 60) * self.args.jitter_minutes)
                jitter = timedelta(seconds=spread)
                yesterday = self.day_start - DAY + company.read_at + jitter
                self.at(yesterday, self.initial_read(company))
            self.counting = self.setup
            before_setup = metrics_snapshot()
            await self.run_until(None, "setup")
            self.setup_metrics = diff(metrics_snapshot(), before_setup)

            if not self.args.first_day:
                # Steady state: yesterday's reconciles listed every company's push operations.
                async with self.sessions.begin() as session:
                    await session.execute(
                        update(Company).values(last_push_reconciled_at=self.day_start - DAY)
                    )
            self.counting = self.day
            self.unlisted.clear()
            self.schedule_day()
            async with self.sessions.begin() as session:
                await enqueue_job(session, kind=SWEEP, key=SWEEP_KEY, now=self.day_start)
            self.log("the day")
            before_day = metrics_snapshot()
            await self.run_until(self.day_start + DAY, "day")
            self.day_metrics = diff(metrics_snapshot(), before_day)
            self.behind = await self.local_copy_behind()
        finally:
            await self.writer.close()
            await self.ctx.codat.aclose()

    def initial_read(self, company: SimCompany) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            await self.codat_reads(company, BILL_PAY, event="read.completed.initial")

        return action

    def schedule_day(self) -> None:
        for company in self.companies:
            self.at(self.day_start + company.read_at, self.daily(company))
        bursts = self.args.writes // self.args.burst
        latest = int((DAY - timedelta(minutes=30)).total_seconds())
        for _ in range(bursts):
            company = self.rng.choice(self.companies)
            start = self.day_start + timedelta(seconds=self.rng.randrange(latest))
            for k in range(self.args.burst):
                self.at(start + timedelta(seconds=k * self.args.burst_gap), self.writer_of(company))
        self.bursts_planned = bursts

    def daily(self, company: SimCompany) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            await self.daily_read(company)

        return action

    def writer_of(self, company: SimCompany) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            await self.write(company)

        return action

    async def local_copy_behind(self) -> tuple[int, int]:
        """(company, type) pairs and records whose local copy differs from Codat's cache."""
        local: defaultdict[tuple[str, str], dict[str, datetime | None]] = defaultdict(dict)
        async with self.engine.connect() as connection:
            result = await connection.stream(
                select(Record.company_id, Record.data_type, Record.record_id, Record.modified_date)
            )
            async for row in result:
                local[(row.company_id, row.data_type)][row.record_id] = row.modified_date
        pairs = records = 0
        for key, remote in self.cache.items():
            mine = local.get(key, {})
            wrong = sum(1 for record_id, stamp in remote.items() if mine.get(record_id) != stamp)
            if wrong:
                pairs += 1
                records += wrong
        return pairs, records


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


# -- the report ---------------------------------------------------------------------------


def report(sim: Simulation, seconds: float) -> None:
    args, settings, day = sim.args, sim.settings, sim.day
    per_company = int(DAY / settings.reconcile_interval)
    least = {
        CHANGED: day.least_pages,
        REFRESH_WRITE: sim.bursts_planned,
        STATUS: args.companies * per_company,
    }
    calls = day.calls
    like = sum(calls[k] for k in LIKE_FOR_LIKE)
    total = sum(calls.values())
    least_total = sum(least.values())
    setup_calls = sum(sim.setup.calls.values())

    list_types = ", ".join(
        f"{t} {max(1, round(args.records * share))}" for t, (share, _) in LIST_TYPES.items()
    )
    print(
        f"\n{args.companies} companies, {args.database}, seed {args.seed}; records per company: "
        f"{list_types}, company profile 1; {args.modified:.0%} of them change before each "
        f"daily sync; {round(args.companies * args.missed)} daily read.completed not "
        f"delivered; {args.writes} writes in {sim.bursts_planned} bursts of {args.burst} "
        f"({args.burst_gap} s apart); Codat reads a refreshed type {args.sync_minutes} min "
        f"after the call. Settings: page size {settings.codat_page_size}, pull debounce "
        f"{settings.pull_debounce_seconds:g} s, refresh debounce "
        f"{settings.refresh_debounce_seconds:g} s, sweep every {settings.sweep_interval}, "
        f"reconcile every {settings.reconcile_interval}, freshness max age "
        f"{settings.freshness_max_age}."
    )
    print(
        f"Setup (yesterday's initial reads, not in the day): {setup_calls} calls "
        f"({sim.setup.calls[CHANGED] + sim.setup.calls[NOTHING_NEW]} list pages). "
        f"{seconds:.0f} s of real time in all."
    )
    print(
        "The service's first day: no push operations listed before it.\n"
        if sim.args.first_day
        else "Steady state: every company's push operations were listed yesterday.\n"
    )
    width = 40
    print(f"{'kind':<{width}} {'service':>8} {'least':>8}")
    for kind in LIKE_FOR_LIKE:
        shown = str(least[kind]) if kind in least else "-"
        print(f"{kind:<{width}} {calls[kind]:>8} {shown:>8}")
    print(f"{'like for like (the kinds above)':<{width}} {like:>8} {least_total:>8}")
    for kind in EXTRA:
        print(f"{kind:<{width}} {calls[kind]:>8} {'-':>8}")
    print(f"{'all calls':<{width}} {total:>8} {least_total:>8}")
    print(
        f"\nratio, like for like: {like / least_total:.2f} x the least;  "
        f"all calls: {total / least_total:.2f} x the least  (target: at most 1.1)\n"
    )
    metrics = sim.day_metrics
    print("The least:")
    print(
        f"  pages of changed records: {day.least_pages} = sum of ceil(n / {MAX_PAGE_SIZE}) over "
        f"the {day.changed_reads} (company, type) reads by Codat that changed n > 0 records "
        f"({day.changed_records} records; missed webhooks and written bills included)"
    )
    print(f"  refreshes: one per burst of writes = {sim.bursts_planned}")
    print(
        f"  dataStatus: {args.companies} companies x {per_company} reconciles a day "
        f"(24 h / RECONCILE_INTERVAL {settings.reconcile_interval}) = {least[STATUS]}"
    )
    print("The service, and what it spends beyond the least:")
    print(
        f"  {metrics['reconciles']:.0f} reconciles ran; each read dataStatus; those of "
        f"companies that write, or whose reads were caught up, also listed push operations "
        f"(the '{PUSH_LIST}' line) to find missed write webhooks: "
        f"{metrics['missed_writes']:.0f} found"
    )
    waves = sorted(m for m, n in day.status_minutes.items() if n >= args.companies / 10)
    if waves:
        print(
            f"  reconcile ran in waves: {sum(day.status_minutes[m] for m in waves)} of the "
            f"{calls[STATUS]} dataStatus reads (and as many push lists) at {len(waves)} "
            f"simulated instants ({', '.join(waves)})"
        )
    print(
        f"  refreshes by reason (service metric): write {metrics['refresh_write']:.0f}, sweep "
        f"{metrics['refresh_sweep']:.0f}; answered 409 (already in progress): {day.refresh_409}"
    )
    for why, count in day.sweep_refresh_why.most_common():
        print(f"    sweep refreshes of {why}: {count}")
    print(
        f"  missed read.completed caught up by reconcile: {metrics['missed_reads']:.0f} "
        f"(company, type) pulls; catch-up pulls that found nothing new (dataStatus does not say "
        f"whether records changed): {calls[NOTHING_NEW]}"
    )
    pairs, records = sim.behind
    print(
        f"  at the day's end the local copy differs from Codat's cache in {pairs} (company, "
        f"type) pairs, {records} records"
        + (" (changes Codat read that the service never pulled)" if pairs else "")
    )
    print(
        "  each incremental pull asks modifiedDate>=watermark: it fetches again the record "
        "stamped at the watermark, one record, not one more call, unless the changes fill "
        f"pages of {MAX_PAGE_SIZE} exactly"
    )
    if metrics["retries"]:
        print(f"  work items retried or dead: {metrics['retries']:.0f}")


# -- databases ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        # tmpfs when there is one: every commit is an fsync (synchronous=FULL), and this
        # benchmark counts calls, not time.
        with tempfile.TemporaryDirectory(prefix="bench-cost-", dir=TMPFS) as directory:
            url = f"sqlite:///{directory}/cost.db"
            await asyncio.to_thread(upgrade, url)
            yield url
        return
    admin = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    name = f"bench_cost_{uuid.uuid4().hex[:8]}"
    dsn = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        # Calls are counted, not time: skip the WAL flush at each of many small commits.
        await connection.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await connection.close()
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    now = datetime.now(UTC)
    day_start = (now + DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    fake = FakeCodat(api_key=API_KEY)
    async with database(args.database) as url:
        engine = create_engine(url)
        try:
            with run_fake_codat(fake) as base_url:
                sim = Simulation(args, engine, fake, base_url, day_start)
                await sim.run()
        finally:
            await engine.dispose()
    report(sim, time.monotonic() - started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--records", type=int, default=200, help="bills per company")
    parser.add_argument("--modified", type=float, default=0.05, help="share changed per day")
    parser.add_argument("--missed", type=float, default=0.01, help="daily webhooks lost")
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--burst", type=int, default=5, help="writes per burst")
    parser.add_argument("--burst-gap", type=int, default=5, help="seconds between them")
    parser.add_argument("--sync-minutes", type=int, default=5, help="Codat's read after a refresh")
    parser.add_argument(
        "--jitter-minutes",
        type=float,
        default=0.0,
        help="yesterday's sync up to this far from today's time minus 24 h",
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--first-day",
        action="store_true",
        help="the service's first day: no company's push operations listed before it",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The service logs every pull and every catch-up; the report counts them instead.
    logging.getLogger("app").setLevel(logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
