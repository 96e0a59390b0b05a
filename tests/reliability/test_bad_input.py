"""Bad input: over 200 generated hostile requests and a hypothesis fuzz of the endpoint.

Each gets the documented answer (401, 413, 405; or, signed but unreadable, 2xx and one
row kept as `unprocessable`), nothing else is stored, no secret leaks into an answer or
a log line, and afterwards the service is healthy and still accepts a good event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from svix.webhooks import Webhook, WebhookVerificationError

from app.migrate import upgrade
from app.webhooks.signature import signed_headers
from tests.reliability.checks import event_rows
from tests.reliability.events import new_delivery_id
from tests.reliability.hostile import (
    Case,
    Header,
    cases,
    delivery_id_of,
    good_body,
    signed,
)
from tests.reliability.processes import Processes, Service, service_env
from tests.reliability.report import Report, Section, fmt, table
from tests.reliability.sender import Delivery, Sender
from tests.reliability.sizes import SeededRandom, Size, current_size
from tests.support.signing import ROTATED_SECRET, TEST_SECRET

pytestmark = pytest.mark.reliability

LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES, the default
SECRETS = (TEST_SECRET, ROTATED_SECRET)
LEAKS = [s for secret in SECRETS for s in (secret, secret.removeprefix("whsec_"))]
FUZZ_EXAMPLES = current_size().fuzz_examples


class EventsTable:
    """The service's SQLite file, read-only, as the checks need it."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM webhook_events").fetchone()[0])

    def row(self, delivery_id: str) -> tuple[str, bytes] | None:
        found = self._db.execute(
            "SELECT status, raw_body FROM webhook_events WHERE delivery_id = ?", (delivery_id,)
        ).fetchone()
        return None if found is None else (str(found[0]), bytes(found[1]))

    def close(self) -> None:
        self._db.close()


@dataclass
class Target:
    service: Service
    table: EventsTable
    client: httpx.Client

    def post(self, headers: list[Header], body: bytes | None) -> httpx.Response:
        return self.client.post(self.service.webhook_url, content=body, headers=_raw(headers))

    def healthy(self) -> tuple[bool, str]:
        """Up, ready, and still storing a good event."""
        health = self.client.get(f"{self.service.base_url}/healthz")
        ready = self.client.get(f"{self.service.base_url}/readyz")
        body = good_body()
        headers = signed(body)
        good = self.post(headers, body)
        stored = self.table.row(delivery_id_of(headers))
        ok = (
            self.service.process.alive
            and health.status_code == 200
            and ready.status_code == 200
            and good.status_code == 200
            and stored is not None
        )
        return ok, (
            f"/healthz {health.status_code}, /readyz {ready.status_code}, "
            f"a good event {good.status_code} {good.text[:60]}"
        )

    def log_problems(self) -> list[str]:
        text = self.service.process.log.read_text(errors="replace")
        problems = [f"the log holds a secret ({s[:10]}...)" for s in LEAKS if s in text]
        if "Traceback" in text:
            problems.append("the log holds a traceback")
        return problems


def _raw(headers: list[Header]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v if isinstance(v, bytes) else v.encode("utf-8")) for k, v in headers]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One receiver (no worker: only what the route stores matters) on a SQLite file."""
    folder = tmp_path_factory.mktemp("bad-input")
    url = f"sqlite:///{folder / 'events.db'}"
    # Alembic runs its own event loop: keep it off this thread's.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, url).result()
    processes = Processes(folder)
    env = service_env(url, EMBEDDED_WORKER="false", WEBHOOK_MAX_BODY_BYTES=str(LIMIT))
    try:
        service = processes.serve_blocking("serve", env)
        table = EventsTable(folder / "events.db")
        with httpx.Client(timeout=30) as client:
            yield Target(service, table, client)
        table.close()
    finally:
        processes.stop_all()


def _send(target: Target, case: Case) -> httpx.Response:
    content: bytes | Iterator[bytes] | None = case.body
    if case.body is not None and case.chunks:
        body, step = case.body, -(-len(case.body) // case.chunks)
        content = iter([body[i : i + step] for i in range(0, len(body), step)])
    return target.client.request(
        case.method, target.service.webhook_url, content=content, headers=_raw(case.headers)
    )


def _judge(target: Target, case: Case, response: httpx.Response, before: int) -> list[str]:
    problems = []
    if response.status_code != case.expect:
        problems.append(f"answered {response.status_code}, documented {case.expect}")
    added = target.table.count() - before
    if case.stores is None:
        if added:
            problems.append(f"{added} row(s) stored")
    else:
        assert case.delivery_id is not None
        if added != (0 if case.answer == "duplicate" else 1):
            problems.append(f"{added} rows added")
        row = target.table.row(case.delivery_id)
        if row is None:
            problems.append("not stored")
        elif row[0] != case.stores:
            problems.append(f"stored as {row[0]}, expected {case.stores}")
        elif row[1] != case.stored_body:
            problems.append("stored body differs from the one sent")
        if case.answer and response.status_code == 200:
            answer = response.json().get("status")
            if answer != case.answer:
                problems.append(f"answer says {answer}, expected {case.answer}")
    if any(secret in response.text for secret in LEAKS):
        problems.append("a secret in the answer")
    return problems


def test_generated_bad_input_gets_the_documented_answer_and_stores_nothing(
    target: Target, reliability_report: Report
) -> None:
    section = reliability_report.section(
        5,
        "Bad input",
        "Generated hostile requests, one at a time, to a `serve` process on SQLite "
        f"(WEBHOOK_MAX_BODY_BYTES={LIMIT:,}). For each, the answer must be the one DESIGN.md "
        "and the README document, and the events table must change only as documented.",
    )
    section.setup = [
        "401: unsigned, tampered bodies, headers and signatures, stale, future and "
        "non-numeric timestamps, a wrong secret, invalid UTF-8 (svix cannot read it)",
        "413: bodies over the limit, with or without Content-Length, signed or not; "
        "405: GET, HEAD, PUT, PATCH, DELETE, OPTIONS",
        "2xx, one row `unprocessable`: correctly signed bodies that are not JSON or not an "
        "envelope (including nesting past the parser's depth limit)",
        "2xx, one row `unprocessable`: correctly signed envelopes that would steer or break "
        "the worker: ids that are not Codat's (a path such as `x/../../../webhooks?`, "
        "`company-04`, a NUL), a `generatedDate` with no UTC form "
        "(`9999-12-31T23:59:59-01:00`)",
        "2xx, one row `pending`: correctly signed envelopes with hostile content (huge "
        "strings, NaN, duplicate keys) and signed deliveries with any content type: the "
        "signature is checked, the content type is not trusted (documented behaviour)",
        "controls that must be accepted: both secrets, svix- headers, timestamps inside the "
        "tolerance, a redelivery (answered `duplicate`, still one row)",
    ]
    generated: list[Case] = []
    outcomes: dict[str, list[tuple[Case, int, list[str]]]] = defaultdict(list)
    answers: Counter[int] = Counter()
    for case in cases(LIMIT):  # made one at a time, each just before it is sent
        generated.append(case)
        before = target.table.count()
        try:
            response = _send(target, case)
        except httpx.HTTPError as exc:
            answers[0] += 1
            outcomes[case.category].append((case, 0, [f"no answer: {exc!r:.100}"]))
            continue
        answers[response.status_code] += 1
        outcomes[case.category].append(
            (case, response.status_code, _judge(target, case, response, before))
        )
    healthy, health = target.healthy()
    log_problems = target.log_problems()

    failed = [(c, code, p) for results in outcomes.values() for c, code, p in results if p]
    refused = [c for c in generated if c.stores is None]
    kept = [c for c in generated if c.stores is not None]
    section.add_sent("generated cases", len(generated))
    section.add_sent("categories", len(outcomes))
    section.add_seen("answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())))
    section.add_seen("rows in webhook_events at the end", target.table.count())
    section.details = [
        "By category:",
        "",
        *table(
            ["category", "cases", "documented answer", "as documented", "rows expected"],
            [
                [
                    category,
                    len(results),
                    ", ".join(sorted({str(c.expect) for c, _, _ in results})),
                    sum(1 for _, _, p in results if not p),
                    sum(1 for c, _, _ in results if c.stores and c.answer != "duplicate"),
                ]
                for category, results in outcomes.items()
            ],
        ),
    ]
    if failed:
        section.details += [
            "",
            "Cases not answered as documented:",
            "",
            *table(
                ["category", "case", "answer", "problem"],
                [[c.category, c.name, code, "; ".join(p)] for c, code, p in failed[:40]],
            ),
        ]
    section.check("at least 200 generated cases", len(generated) >= 200, f"{len(generated)}")
    section.check(
        "every case got its documented answer and changed the table only as documented",
        not failed,
        f"{len(failed)} did not" if failed else f"{len(refused)} refused, {len(kept)} kept",
    )
    section.check(
        "no 5xx for any of them",
        not any(code >= 500 for code in answers),
        str(dict(answers)),
    )
    section.check(
        "no secret in any answer or log line, no traceback",
        not log_problems,
        "; ".join(log_problems),
    )
    section.check(
        "after the barrage: alive, /healthz and /readyz 200, a good event stored", healthy, health
    )
    section.headline = (
        f"{len(generated)} cases in {len(outcomes)} categories: "
        f"{len(generated) - len(failed)} answered as documented; answers "
        + ", ".join(f"{fmt(v)} x {k}" for k, v in sorted(answers.items()))
    )
    section.finish()


def test_a_second_delivery_id_header_cannot_store_one_signed_delivery_twice(
    target: Target, reliability_report: Report
) -> None:
    """The delivery id is what makes a retry a no-op, so it must be the id the signature
    covers. svix verifies with the last `webhook-id` header; the route stores the first."""
    section = reliability_report.section(
        6,
        "Bad input: a replay with two delivery id headers",
        "A delivery is posted once, then replayed byte for byte (same signature, inside the "
        "5-minute tolerance) with one extra `webhook-id` header placed before the signed one.",
    )
    body = good_body()
    headers = signed(body)
    signed_id = delivery_id_of(headers)
    forged_id = f"msg_forged_{uuid.uuid4().hex}"
    first = target.post(headers, body)
    before = target.table.count()
    replay = target.post([("webhook-id", forged_id), *headers], body)
    added = target.table.count() - before
    section.add_sent("requests", "the delivery, then its replay with an extra first webhook-id")
    section.add_seen(
        "answers", f"{first.status_code} {first.text}, {replay.status_code} {replay.text}"
    )
    section.add_seen("rows added by the replay", added)
    section.check("the delivery itself is stored", target.table.row(signed_id) is not None)
    section.check(
        "the replay is not stored as a new delivery (refused, or a duplicate of the signed id)",
        added == 0 and target.table.row(forged_id) is None,
        f"stored again under the unsigned id {forged_id[:20]}..." if added else "",
    )
    if added:
        section.notes.append(
            "svix verifies with the last `webhook-id` header (it builds a dict from the "
            "header list), while the route takes the delivery id from the first one "
            "(`headers.get`): the row is stored under an id the signature does not cover, so "
            "a captured delivery can be replayed within the tolerance and is stored and "
            "processed again. The same holds for `svix-id`."
        )
    section.headline = (
        "replay stored again under an unsigned id: idempotency bypassed"
        if added
        else "the replay is not stored again"
    )
    section.finish()


# -- hypothesis -------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,  # nothing written to the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "content-type",
)
# What a header value can carry on the wire: visible bytes, inner spaces, obs-text.
VALUE_BYTES = [b for b in range(0x20, 0x100) if b != 0x7F]
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
    st.lists(st.sampled_from(VALUE_BYTES), max_size=60).map(lambda b: bytes(b).strip()),
    st.integers(min_value=-(10**12), max_value=10**13).map(str),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
valid_envelopes = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=255),
        "eventType": st.one_of(
            st.sampled_from(["read.completed", "bills.write.successful", "company.created"]),
            st.text(min_size=1, max_size=255),
        ),
        "generatedDate": st.text(max_size=40),
        "payload": st.dictionaries(st.text(), json_values, max_size=5),
    }
)
odd_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=300), st.integers(), st.none()),
        "eventType": st.one_of(
            st.sampled_from(["read.completed", "bills.write.successful", "company.created"]),
            st.text(max_size=300),
        ),
        "generatedDate": st.one_of(st.text(max_size=40), st.integers()),
        "payload": st.one_of(st.dictionaries(st.text(), json_values, max_size=5), json_values),
    },
)
bodies = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=1000).map(str.encode),
    json_values.map(lambda v: _dumps(v)),
    valid_envelopes.map(lambda v: _dumps(v)),
    odd_envelopes.map(lambda v: _dumps(v)),
)


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()


@st.composite
def mutated_deliveries(draw: st.DrawFn) -> tuple[list[Header], bytes]:
    """A correctly signed delivery, then one to four random changes to it."""
    body = draw(bodies) if draw(st.booleans()) else good_body()
    prefix = draw(st.sampled_from(["webhook", "svix"]))
    headers = {k: v for k, v in signed(body, prefix=prefix) if k != "content-type"}
    values: dict[str, str | bytes] = dict(headers)
    for _ in range(draw(st.integers(1, 4))):
        change = draw(st.sampled_from(["set", "drop", "body", "flip", "shift"]))
        name = draw(st.sampled_from(NAMES))
        if change == "set":
            values[name] = draw(header_values)
        elif change == "drop":
            values.pop(name, None)
        elif change == "body":
            body = draw(bodies)
        elif change == "flip" and body:
            at = draw(st.integers(0, len(body) - 1))
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
        elif change == "shift":
            stamp = f"{prefix}-timestamp"
            current = str(values.get(stamp, "0"))
            if current.lstrip("-").isdigit():
                values[stamp] = str(int(current) + draw(st.integers(-(10**6), 10**6)))
    return [(k, v) for k, v in values.items()], body


def _svix_accepts(headers: list[Header], body: bytes) -> bool:
    """The reference: the svix package, with every configured secret, given the one header
    map the service builds (`svix-*` else `webhook-*`, an empty one absent: the rule of the
    delivery id, whatever svix's own fallback)."""
    as_text = {
        k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in headers
    }  # the server reads header bytes as Latin-1
    for secret in SECRETS:
        try:
            Webhook(secret).verify(body, signed_headers(as_text))
            return True
        except (WebhookVerificationError, ValueError, UnicodeDecodeError, TypeError):
            continue
    return False


def _fuzz_section(
    report: Report, order: int, title: str, summary: str, size: Size
) -> tuple[Section, Counter[str]]:
    section = report.section(order, title, summary)
    section.setup = [
        f"{size.fuzz_examples} hypothesis examples (RELIABILITY_FULL=1 raises it), "
        "no example database (nothing written to the tree), no deadline",
    ]
    return section, Counter()


def test_fuzzed_deliveries_are_refused_unless_svix_accepts_them(
    target: Target, reliability_report: Report, size: Size
) -> None:
    section, seen = _fuzz_section(
        reliability_report,
        7,
        "Fuzz: mutated deliveries",
        "Hypothesis starts from a correctly signed delivery (webhook- or svix- headers) and "
        "changes one to four things: a header set to random bytes or text, a header "
        "dropped, the body replaced or a byte flipped, the timestamp shifted. The svix "
        "package, given the service's header map (`svix-*` else `webhook-*`), is the "
        "reference: if it accepts the result with a configured secret the "
        "service must answer 2xx and store it once, otherwise 401 and store nothing.",
        size,
    )
    failures: list[str] = []

    @FUZZ_SETTINGS
    @given(mutated_deliveries())
    def run(delivery: tuple[list[Header], bytes]) -> None:
        headers, body = delivery
        expected = 200 if _svix_accepts(headers, body) else 401
        before = target.table.count()
        response = target.post(headers, body)
        added = target.table.count() - before
        seen[f"{response.status_code}"] += 1
        seen["accepted by svix" if expected == 200 else "refused by svix"] += 1
        problem = ""
        if response.status_code != expected:
            problem = f"answered {response.status_code}, svix says {expected}"
        elif added != (1 if expected == 200 else 0):
            problem = f"{added} rows added"
        elif any(secret in response.text for secret in LEAKS):
            problem = "a secret in the answer"
        if problem:
            failures.append(f"{problem}: {headers!r:.300}")
        assert not problem, problem

    try:
        run()
    finally:
        healthy, health = target.healthy()
        section.add_sent("examples", seen["accepted by svix"] + seen["refused by svix"])
        section.add_sent("of which svix accepts", seen["accepted by svix"])
        section.add_seen(
            "answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(seen.items()) if k.isdigit())
        )
        section.check(
            "each answered 2xx and stored once if svix accepts it, else 401 and stored nothing",
            not failures,
            failures[0] if failures else "",
        )
        section.check("no secret in the log, no traceback", not target.log_problems())
        section.check("afterwards: healthy, and a good event stored", healthy, health)
        section.headline = (
            f"{fmt(seen['accepted by svix'] + seen['refused by svix'])} examples, "
            f"{len(failures)} not as svix decides"
        )
        section.finish()


def test_fuzzed_signed_bodies_are_stored_once_whatever_they_hold(
    target: Target, reliability_report: Report, size: Size
) -> None:
    section, seen = _fuzz_section(
        reliability_report,
        8,
        "Fuzz: signed bodies",
        "Hypothesis makes bodies (random bytes, text, JSON values, envelope-like objects "
        "with random fields) and signs each correctly. A body svix can read (UTF-8) must "
        "get 2xx and one row (`pending` if it is an envelope, else `unprocessable`, as the "
        "answer says), byte for byte; sent again, `duplicate` and still one row. A body "
        "that is not UTF-8 cannot be verified by svix: 401, nothing stored.",
        size,
    )
    failures: list[str] = []

    @FUZZ_SETTINGS
    @given(bodies)
    def run(body: bytes) -> None:
        try:
            body.decode()
            readable = True
        except UnicodeDecodeError:
            readable = False
        headers = signed(body)
        delivery_id = delivery_id_of(headers)
        before = target.table.count()
        response = target.post(headers, body)
        problem = ""
        if not readable:
            seen["not UTF-8"] += 1
            if response.status_code != 401 or target.table.count() != before:
                problem = f"not UTF-8: answered {response.status_code}"
        else:
            answer = response.json().get("status") if response.status_code == 200 else None
            seen[str(answer)] += 1
            row = target.table.row(delivery_id)
            again = target.post(signed(body, msg_id=delivery_id), body)
            if response.status_code != 200 or answer not in ("stored", "unprocessable"):
                problem = f"answered {response.status_code} {response.text[:80]}"
            elif row is None or row[1] != body:
                problem = "not stored byte for byte"
            elif row[0] != ("pending" if answer == "stored" else "unprocessable"):
                problem = f"answer {answer} but row {row[0]}"
            elif again.status_code != 200 or again.json().get("status") != "duplicate":
                problem = f"redelivery answered {again.status_code} {again.text[:80]}"
            elif target.table.count() != before + 1:
                problem = f"{target.table.count() - before} rows"
        if problem:
            failures.append(f"{problem}: {body[:120]!r}")
        assert not problem, problem

    try:
        run()
    finally:
        healthy, health = target.healthy()
        section.add_sent("signed bodies", sum(seen.values()))
        section.add_seen(
            "outcomes",
            ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(seen.items())),
        )
        section.check(
            "readable bodies: 2xx, stored once byte for byte, status as answered, "
            "redelivery a duplicate; unreadable: 401, nothing stored",
            not failures,
            failures[0] if failures else "",
        )
        section.check("no secret in the log, no traceback", not target.log_problems())
        section.check("afterwards: healthy, and a good event stored", healthy, health)
        section.headline = (
            f"{fmt(sum(seen.values()))} signed bodies "
            f"({fmt(seen['stored'])} envelopes, {fmt(seen['unprocessable'])} unprocessable, "
            f"{fmt(seen['not UTF-8'])} not UTF-8): {len(failures)} problems"
        )
        section.finish()


# -- one poisoned delivery among genuine ones -------------------------------------------

POISON_ROUNDS = 5
GENUINE_PER_ROUND = 100


def _poisoned(round_: int) -> tuple[str, bytes]:
    """A signed body whose values PostgreSQL cannot store (a NUL), a different place each
    round: the review's attack, and the shape of a Codat bug."""
    event = json.loads(good_body())
    place = ("eventType", "id", "company id")[round_ % 3]
    if place == "company id":
        event["payload"]["referenceCompany"]["id"] += "\x00"
    else:
        event[place] += "\x00"
    return f"a NUL in the {place}", json.dumps(event).encode()


async def test_a_poisoned_delivery_costs_none_of_the_genuine_ones_beside_it(
    reliability_report: Report,
    processes: Processes,
    postgres_url: str,
    postgres_engine: AsyncEngine,
    rng: SeededRandom,
) -> None:
    section = reliability_report.section(
        9,
        "Bad input: a poisoned delivery among genuine ones",
        f"{POISON_ROUNDS} rounds, each of {GENUINE_PER_ROUND} genuine signed deliveries and one "
        "signed delivery whose values PostgreSQL cannot store (a NUL in a string), all sent "
        "at once to one `serve` process on PostgreSQL, so that they share group commits. "
        "Once, the poisoned row made PostgreSQL refuse its whole batch (78 of 100 genuine "
        "deliveries got 503). Sent once each, no retries: a 503 is a loss here.",
    )
    section.setup = [
        "`codat-webhooks serve` (no worker), PostgreSQL (a fresh database on the test server)",
        "the poison, by round: a NUL in the eventType, in the event id, in the company id",
        f"random seed {rng.seed_value} (the poison's place among the genuine deliveries)",
    ]
    service = await processes.serve("serve", service_env(postgres_url, EMBEDDED_WORKER="false"))
    sender = Sender(service.webhook_url, retry=False)
    genuine: list[Delivery] = []
    poisoned: list[Delivery] = []
    try:
        for round_ in range(POISON_ROUNDS):
            batch = [
                sender.new(new_delivery_id(), good_body(), "genuine")
                for _ in range(GENUINE_PER_ROUND)
            ]
            genuine += batch
            name, body = _poisoned(round_)
            poison = sender.new(new_delivery_id(), body, name)
            poisoned.append(poison)
            batch.insert(rng.randrange(len(batch) + 1), poison)
            await asyncio.gather(*(sender.attempt(delivery) for delivery in batch))
    finally:
        await sender.aclose()
    rows = await event_rows(postgres_engine)
    answers = sender.answer_counts()
    lost = [d for d in genuine if rows.get(d.delivery_id) is None or not d.acknowledged]
    genuine_pending = sum(
        1 for d in genuine if (row := rows.get(d.delivery_id)) and row.status == "pending"
    )
    poison_statuses = Counter(
        f"{d.kind}: {row.status if (row := rows.get(d.delivery_id)) else 'not stored'}"
        for d in poisoned
    )
    poison_answers = Counter(d.attempts[-1].outcome for d in poisoned)
    section.add_sent("genuine deliveries", len(genuine))
    section.add_sent("poisoned deliveries", len(poisoned))
    section.add_seen("answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())))
    section.add_seen("genuine deliveries stored (pending)", genuine_pending)
    section.add_seen(
        "poisoned deliveries stored as",
        ", ".join(f"{k} ({fmt(n)})" for k, n in sorted(poison_statuses.items())),
    )
    section.check(
        "every genuine delivery answered 2xx and stored, none lost",
        not lost and genuine_pending == len(genuine),
        f"{len(lost)} lost" if lost else "",
    )
    section.check(
        "every poisoned delivery answered 2xx `unprocessable` and kept byte for byte",
        set(poison_answers) == {"unprocessable"}
        and all(
            (row := rows.get(d.delivery_id)) is not None
            and row.status == "unprocessable"
            and row.raw_body == d.body
            for d in poisoned
        ),
        ", ".join(f"{k}: {fmt(n)}" for k, n in poison_answers.items()),
    )
    section.check("no 503 and no 5xx at all", not any(k.startswith("5") for k in answers))
    section.check("the service is still up", service.process.alive)
    section.headline = (
        f"{len(genuine) - len(lost)} of {len(genuine)} genuine deliveries stored beside "
        f"{len(poisoned)} poisoned ones, which were kept as unprocessable"
    )
    section.finish()
