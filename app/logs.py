"""Structured logs: JSON in production, readable in development, secrets never."""

from __future__ import annotations

import logging
import sys

import structlog

from app import tracing


def _drop_color_message(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """uvicorn adds a colourised copy of its message; one copy is enough."""
    event.pop("color_message", None)
    return event


def _add_trace_ids(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """trace_id and span_id of the active span (tracing on): a log line finds its trace."""
    ids = tracing.trace_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        _add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # JSON has no traceback type: without this a line said "<traceback object>".
                *([structlog.processors.format_exc_info] if fmt == "json" else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # Driver loggers print SQL parameters (raw bodies) at DEBUG: never let them. Alembic
    # names each of its plugins at INFO when the first script directory loads (/readyz).
    for noisy in (
        "uvicorn.access",
        "httpx",
        "httpcore",
        "aiosqlite",
        "asyncpg",
        "sqlalchemy",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
