"""OpenTelemetry traces: one trace per event, from the webhook request to its last Codat call.

Configured only by the standard `OTEL_*` environment variables (`OTEL_TRACES_EXPORTER`,
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, ...), through
the SDK's own configurator. Off when no exporter is configured: then nothing here imports
OpenTelemetry, and every helper is a check of one variable.

The receive span's context is stored with the event (`traceparent`, W3C); the worker's
span for the event continues it, and so do the jobs the event asks for (pulls carry the
`traceparent` of the span that queued them). The worker's own polling, the group commit
and the health and metrics routes are left out of traces (`untraced`): they would be a
root trace of SQL spans each, many a second.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from starlette.types import ASGIApp

TRACER_NAME = "codat-webhooks"
# The SDK's default protocol for `otlp` is gRPC; the spec's default, and what is installed
# (opentelemetry-exporter-otlp-proto-http), is HTTP.
DEFAULT_OTLP_PROTOCOL = "http/protobuf"
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

_tracer: Tracer | None = None
# W3C trace context, whatever OTEL_PROPAGATORS says: the `traceparent` columns hold it.
_w3c: TraceContextTextMapPropagator | None = None
P = ParamSpec("P")
T = TypeVar("T")


class InvalidTracingConfig(Exception):
    """The OTEL_* variables ask for what cannot be had (an exporter not installed)."""


def wanted(environ: Mapping[str, str]) -> bool:
    """Tracing is on when an exporter is configured: named, or an OTLP endpoint given."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() not in ("", "none")
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def enabled() -> bool:
    return _tracer is not None


def configure(*, span_processors: Sequence[SpanProcessor] = ()) -> bool:
    """Set up the SDK from the environment and instrument httpx and SQLAlchemy, if an
    exporter is configured (or `span_processors` are given: tests). Call it before the
    engines and apps are made. True if tracing is on; InvalidTracingConfig if the
    variables name an exporter that is not installed."""
    global _tracer, _w3c
    if not (wanted(os.environ) or span_processors):
        return False
    if _tracer is not None:
        return True
    from opentelemetry import trace
    from opentelemetry.distro import OpenTelemetryConfigurator
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if wanted(os.environ):
        # As opentelemetry-distro does for `opentelemetry-instrument`: an endpoint alone
        # means OTLP.
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", DEFAULT_OTLP_PROTOCOL)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):  # set up before, by an earlier configure
        for processor in span_processors:
            provider.add_span_processor(processor)
    else:
        # The SDK's own reading of OTEL_* (exporters, sampler, resource, batching).
        configurator = OpenTelemetryConfigurator()  # type: ignore[no-untyped-call]
        try:
            configurator.configure(span_processors=list(span_processors))  # type: ignore[no-untyped-call]
        except RuntimeError as exc:  # what the SDK raises for an exporter it cannot find
            raise InvalidTracingConfig(
                f"{exc}; installed: otlp (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf), console"
            ) from None
    # Metrics stay Prometheus's (app/metrics.py): the instrumentations measure nothing.
    no_metrics = NoOpMeterProvider()
    HTTPXClientInstrumentor().instrument(meter_provider=no_metrics)
    # Its declared range ends before SQLAlchemy 2.1, whose engine events (all it hooks)
    # are those of 2.0; tests/test_tracing.py checks that the statements are spans.
    SQLAlchemyInstrumentor().instrument(meter_provider=no_metrics, skip_dep_check=True)
    _tracer = trace.get_tracer(TRACER_NAME)
    _w3c = TraceContextTextMapPropagator()
    return True


def disable() -> None:
    """Undo `configure` (tests): the instrumentations off, the helpers no-ops again."""
    global _tracer, _w3c
    if _tracer is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    _tracer = _w3c = None


def instrument_asgi(app: ASGIApp) -> ASGIApp:
    """The app inside OpenTelemetry's ASGI middleware: one server span per request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.metrics import NoOpMeterProvider

    wrapped: ASGIApp = OpenTelemetryMiddleware(
        app, meter_provider=NoOpMeterProvider(), exclude_spans=["receive", "send"]
    )
    return wrapped


def instrument_fastapi(app: Any) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    FastAPIInstrumentor.instrument_app(
        app, meter_provider=NoOpMeterProvider(), exclude_spans=["receive", "send"]
    )


def traceparent() -> str | None:
    """The active span's context as a W3C `traceparent`, to store with what it asks for."""
    if _w3c is None:
        return None
    carrier: dict[str, str] = {}
    _w3c.inject(carrier)
    return carrier.get("traceparent")


def trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span, in the hex of W3C and of every backend."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def continue_trace(
    stored: str | None, name: str, attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Span | None]:
    """A span for work taken from the queue, child of the span that stored it (or a new
    trace), in a context of its own: whatever the worker's loop suppressed is not."""
    if _tracer is None or _w3c is None:
        return _NO_SPAN
    return _continued(_tracer, _w3c, stored, name, attributes)


@contextlib.contextmanager
def _continued(
    tracer: Tracer,
    w3c: TraceContextTextMapPropagator,
    stored: str | None,
    name: str,
    attributes: Mapping[str, Any],
) -> Iterator[Span]:
    from opentelemetry import context
    from opentelemetry.trace import SpanKind

    # A fresh context (not the worker loop's), with the stored span as the parent.
    parent = w3c.extract({"traceparent": stored} if stored else {})
    token = context.attach(parent)
    try:
        with tracer.start_as_current_span(
            name, kind=SpanKind.CONSUMER, attributes=_clean(attributes)
        ) as span:
            yield span
    finally:
        context.detach(token)


def span(
    name: str, attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Span | None]:
    """A child span of the active one (a Codat call, a pulled page); nothing when off."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=_clean(attributes))


def untraced() -> contextlib.AbstractContextManager[None]:
    """No spans from instrumentations within (housekeeping that would be noise)."""
    if _tracer is None:
        return _NO_SPAN
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def untraced_coroutine(
    function: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """`untraced` around a coroutine function, and around the tasks it starts."""

    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with untraced():
            return await function(*args, **kwargs)

    return wrapper


def annotate(attributes: Mapping[str, Any], *, failed: bool = False) -> None:
    """Attributes on the active span, and its status an error if `failed`."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    current = trace.get_current_span()
    current.set_attributes(_clean(attributes))
    if failed:
        current.set_status(Status(StatusCode.ERROR))


def record_exception(exc: BaseException) -> None:
    """An exception handled here (a retry, a dead item), kept on the active span."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from sqlalchemy.exc import StatementError

    span = trace.get_current_span()
    if isinstance(exc, StatementError):
        # Its text (and so a recorded stack's) holds the SQL and its parameters: payload data.
        from app.db import short_error

        span.add_event(
            "exception",
            {"exception.type": type(exc).__name__, "exception.message": short_error(exc)},
        )
        return
    span.record_exception(exc)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes no None values."""
    return {key: value for key, value in attributes.items() if value is not None}
