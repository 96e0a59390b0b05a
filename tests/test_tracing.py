"""Traces (app/tracing.py): one read.completed is one trace, from the webhook request to
its last Codat call; log lines carry the trace's ids; with no exporter configured there is
no tracing at all."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app import tracing
from app.config import Settings
from app.db import create_engine, session_factory
from app.main import create_app
from app.models import Job
from app.processing.deliveries import Notifier
from app.processing.queue import enqueue_job
from app.processing.worker import Worker
from app.sandbox.fake_codat import FakeCodat, serve_in_thread
from tests.conftest import API_KEY, Clock, make_context, running
from tests.support.consumer import NOTIFY_SECRET, Consumer
from tests.support.flow import COMPANY, deliver, events, one, read_event, seed_company
from tests.support.logging_setup import json_log_formatter
from tests.support.signing import TEST_SECRET


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, to memory, for this test only."""
    exporter = InMemorySpanExporter()
    assert tracing.configure(span_processors=[SimpleSpanProcessor(exporter)])
    try:
        yield exporter
    finally:
        tracing.disable()


@pytest.fixture
async def traced_engine(
    spans: InMemorySpanExporter, engine: AsyncEngine, database_url: str
) -> AsyncIterator[AsyncEngine]:
    """An engine made with tracing on (its statements become spans), on the test's
    database; `engine` empties the tables afterwards."""
    traced = create_engine(database_url)
    yield traced
    await traced.dispose()


def ancestors(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_read_completed_is_one_trace_from_the_request_to_its_pulls(
    spans: InMemorySpanExporter,
    traced_engine: AsyncEngine,
    settings: Settings,
    fake_codat_server: tuple[FakeCodat, str],
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=3)
    ctx = make_context(traced_engine, fake_codat_server[1], clock)
    try:
        async with running(create_app(settings, engine=traced_engine)) as client:
            await deliver(
                client,
                read_event(
                    "read.completed",
                    [("bills", "Complete", True), ("suppliers", "Complete", True)],
                ),
            )
        await Worker(ctx).run_until_idle()
    finally:
        await ctx.codat.aclose()

    finished = spans.get_finished_spans()
    [receive] = [s for s in finished if s.name == "POST /webhooks/codat"]
    assert receive.kind is SpanKind.SERVER
    trace_id = receive.context.trace_id
    in_trace = {s.context.span_id: s for s in finished if s.context.trace_id == trace_id}
    # The event stored the receive span's context, and the worker's span continued it.
    [stored] = await events(traced_engine)
    assert stored.traceparent is not None
    assert stored.traceparent.startswith(f"00-{trace_id:032x}-{receive.context.span_id:016x}-")
    [process] = [s for s in in_trace.values() if s.name == "process read.completed"]
    assert process.parent is not None and process.parent.span_id == receive.context.span_id
    assert process.kind is SpanKind.CONSUMER
    assert process.attributes is not None
    assert process.attributes["codat.company_id"] == COMPANY
    assert process.attributes["codat.outcome"] == "processed"
    # Its pulls, queued by it, in the same trace: each job, its Codat calls and its pages.
    for data_type, pages in (("bills", 2), ("suppliers", 1)):
        [pull] = [s for s in in_trace.values() if s.name == f"pull {data_type}"]
        assert process in ancestors(pull, in_trace), data_type
        calls = [s for s in in_trace.values() if s.name == f"codat read:{data_type}"]
        assert len(calls) == pages, data_type
        for call in calls:
            assert pull in ancestors(call, in_trace)
            assert call.attributes == {
                "codat.operation": f"read:{data_type}",
                "codat.company_id": COMPANY,
                "codat.data_type": data_type,
                "codat.status": "200",
            }
            # httpx's own span of the request, below ours.
            assert any(
                s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == call.context.span_id
                for s in in_trace.values()
            ), call.name
        page_spans = [s for s in in_trace.values() if s.name == f"pull page {data_type}"]
        assert [s.attributes and s.attributes["codat.page"] for s in page_spans] == list(
            range(1, pages + 1)
        )
        assert all(pull in ancestors(s, in_trace) for s in page_spans)
    # The SQL of each step is in the trace too (the SQLAlchemy instrumentation).
    assert any(s.kind is SpanKind.CLIENT and s.name.startswith("INSERT") for s in in_trace.values())
    # Nothing in any span is the API key, as given or as sent.
    secrets = (API_KEY, base64.b64encode(API_KEY.encode()).decode())
    everything = json.dumps([json.loads(s.to_json()) for s in finished])
    assert not any(secret in everything for secret in secrets)
    # The worker's polling made no trace of its own.
    roots = {s.context.trace_id for s in finished if s.parent is None}
    assert roots == {trace_id}, [s.name for s in finished if s.parent is None]


async def test_a_notification_continues_the_trace_of_the_event_that_made_its_change(
    spans: InMemorySpanExporter,
    traced_engine: AsyncEngine,
    settings: Settings,
    fake_codat_server: tuple[FakeCodat, str],
    fake_codat: FakeCodat,
    clock: Clock,
) -> None:
    seed_company(fake_codat, bills=3)
    consumer = Consumer()
    with serve_in_thread(consumer.app, "consumer") as url:
        ctx = make_context(
            traced_engine,
            fake_codat_server[1],
            clock,
            notify_endpoints=[{"url": f"{url}/hook", "secret": NOTIFY_SECRET}],
        )
        notifier = Notifier(ctx, "test-notifier")
        try:
            async with running(create_app(settings, engine=traced_engine)) as client:
                await deliver(client, read_event("read.completed", [("bills", "Complete", True)]))
            await Worker(ctx).run_until_idle()
            await notifier.run_until_idle()
        finally:
            await notifier.aclose()
            await ctx.codat.aclose()

    finished = spans.get_finished_spans()
    [receive] = [s for s in finished if s.name == "POST /webhooks/codat"]
    trace_id = receive.context.trace_id
    in_trace = {s.context.span_id: s for s in finished if s.context.trace_id == trace_id}
    [process] = [s for s in in_trace.values() if s.name == "process read.completed"]
    # The pull's data.changed (and the company's readiness) were each sent in the trace.
    notified = [s for s in in_trace.values() if s.name == "notify change"]
    assert {s.attributes and s.attributes["codat.change_type"] for s in notified} >= {
        "data.changed"
    }
    assert len(notified) == len(consumer.received) >= 1
    for span in notified:
        assert process in ancestors(span, in_trace)
        assert span.attributes is not None and span.attributes["http.status_code"] == 204
    # The endpoint got the trace context too: its own spans can join the trace.
    for change_id, header in consumer.traceparents.items():
        assert header is not None and header.startswith(f"00-{trace_id:032x}-"), change_id
    # The endpoint's secret is in no span.
    everything = json.dumps([json.loads(s.to_json()) for s in finished])
    assert NOTIFY_SECRET.removeprefix("whsec_") not in everything


async def test_a_job_runs_in_the_trace_of_whoever_asked_for_that_run(
    spans: InMemorySpanExporter, traced_engine: AsyncEngine, clock: Clock
) -> None:
    """Asked again while it waits, a pull is still the first asker's; once done, the
    next request starts a run of its own, in its asker's trace."""
    sessions = session_factory(traced_engine)
    key = "pull:company:bills"

    async def ask(name: str) -> str | None:
        with tracing.span(name, {}):
            async with sessions.begin() as session:
                await enqueue_job(session, kind="pull", key=key, now=clock.now)
            return tracing.traceparent()

    first = await ask("first event")
    await ask("second event")
    job = await one(traced_engine, Job, Job.key == key)
    assert job.traceparent == first
    async with sessions.begin() as session:
        await session.execute(update(Job).where(Job.key == key).values(status="done"))
    third = await ask("third event")
    job = await one(traced_engine, Job, Job.key == key)
    assert job.traceparent == third != first


def test_log_lines_carry_the_active_spans_ids(spans: InMemorySpanExporter) -> None:
    with json_log_formatter() as formatter:

        def line(message: str) -> dict[str, Any]:
            record = logging.LogRecord("app.test", logging.INFO, __file__, 1, message, (), None)
            parsed: dict[str, Any] = json.loads(formatter.format(record))
            return parsed

        outside = line("outside")
        with tracing.span("a span", {}):
            inside = line("inside")
    assert "trace_id" not in outside and "span_id" not in outside
    [finished] = spans.get_finished_spans()
    assert inside["trace_id"] == f"{finished.context.trace_id:032x}"
    assert inside["span_id"] == f"{finished.context.span_id:016x}"


OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
)


def set_environment(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> None:
    """Exactly these OTEL_* variables, restored after the test."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Set (so restored) before configure may default it.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "codat-webhooks"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_without_an_exporter_nothing_traces(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_environment(monkeypatch, environ)
    assert tracing.configure() is False
    assert not tracing.enabled()
    assert tracing.traceparent() is None and tracing.trace_ids() is None
    with tracing.span("nothing", {}) as span:
        assert span is None


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_exporter_that_is_not_installed_is_refused_in_one_line(
    command: str, tmp_path: Path
) -> None:
    """As the process starts: the SDK is set up once per process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    started = subprocess.run(
        [str(Path(sys.executable).parent / "codat-webhooks"), command],
        env=environ
        | {
            "OTEL_TRACES_EXPORTER": "zipkin",
            "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}",
            "PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stderr
    [line] = started.stderr.splitlines()
    assert line.startswith("error: invalid tracing configuration:") and "'zipkin'" in line
    assert not (tmp_path / "never.db").exists(), "refused before anything started"


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
        {"OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_an_exporter_or_an_endpoint_turns_tracing_on(environ: dict[str, str]) -> None:
    assert tracing.wanted(environ)
