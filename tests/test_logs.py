"""What errors leave in logs and on rows (issue 16): a traceback as text in JSON lines, and
never a failed statement's SQL or parameters (payload data) in `last_error` or a log line,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import short_error
from app.models import EventStatus
from app.processing import handlers
from app.processing.context import Context
from app.processing.handlers import Delivered, Outcome
from app.processing.worker import Worker
from tests.conftest import sample
from tests.support.flow import deliver, events
from tests.support.logging_setup import json_log_formatter

PAYLOAD_VALUE = "payload-value-never-in-a-log"


@pytest.fixture
def json_formatter() -> Iterator[logging.Formatter]:
    with json_log_formatter() as formatter:
        yield formatter


def test_a_json_line_carries_the_traceback_as_text(json_formatter: logging.Formatter) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "app.test", logging.ERROR, __file__, 1, "it failed", (), sys.exc_info()
        )
    line: dict[str, Any] = json.loads(json_formatter.format(record))
    assert "traceback object" not in json.dumps(line)
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: boom")


async def test_a_failed_statement_leaves_its_class_and_reason_but_no_sql(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, `last_error` and the retry's log line held SQLAlchemy's whole text: the
    statement and its parameters, which carry payload data."""

    async def failing(ctx: Context, delivered: Delivered) -> Outcome:
        async def write(session: AsyncSession) -> None:
            await session.execute(
                text("SELECT * FROM no_such_table WHERE name = :name"), {"name": PAYLOAD_VALUE}
            )

        return Outcome(EventStatus.PROCESSED, write)

    monkeypatch.setitem(handlers.HANDLERS, "client.rateLimit.reached", failing)
    await deliver(client, sample("client.rateLimit.reached"))
    with caplog.at_level(logging.INFO):
        await Worker(ctx).run_until_idle()
    [event] = await events(engine)
    assert event.status == EventStatus.PENDING and event.attempts == 1, "retried"
    error = event.last_error or ""
    assert error.split(":")[0] in ("OperationalError", "ProgrammingError"), error
    assert "no_such_table" in error, "the reason is kept"
    assert PAYLOAD_VALUE not in error and "SELECT" not in error and "[SQL" not in error
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "work item will be retried" in logged
    assert PAYLOAD_VALUE not in logged and "[SQL" not in logged


def test_a_short_error_is_one_line_of_the_drivers_reason() -> None:
    from sqlalchemy.exc import DBAPIError

    orig = RuntimeError(f"value too long\nDETAIL: Key (name)=({PAYLOAD_VALUE}) is bad")
    wrapped = DBAPIError("INSERT INTO t VALUES (:v)", {"v": PAYLOAD_VALUE}, orig)
    assert PAYLOAD_VALUE in str(wrapped), "what SQLAlchemy's own text would have logged"
    assert short_error(wrapped) == "RuntimeError: value too long"
    assert short_error(ValueError("x" * 500)) == "ValueError: " + "x" * 200
    assert short_error(KeyError()) == "KeyError"
