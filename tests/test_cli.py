"""The console script, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.db import create_engine
from app.models import EventStatus, WebhookEvent
from app.webhooks.store import EventWriter, IncomingEvent
from tests.support.ports import free_port
from tests.support.signing import TEST_SECRET

runner = CliRunner()


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = {
        "DATABASE_URL": database_url,
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "CODAT_API_KEY": "key",
        "STATUS_API_TOKENS": "token",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()
    asyncio.run(_wipe(database_url))


async def _wipe(url: str) -> None:
    from sqlalchemy import delete

    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(delete(WebhookEvent))
    await engine.dispose()


def seed(url: str, rows: list[tuple[str, str, datetime | None]]) -> None:
    """(event type, status, processed_at) rows, stored the receiver's way then aged."""

    async def work() -> None:
        from sqlalchemy import update

        engine = create_engine(url)
        writer = EventWriter(engine)
        writer.start()
        for i, (event_type, status, processed_at) in enumerate(rows):
            body = json.dumps(
                {
                    "id": f"e{i}",
                    "eventType": event_type,
                    "generatedDate": "2026-01-01T00:00:00Z",
                    "payload": {},
                }
            )
            await writer.store(
                IncomingEvent(
                    delivery_id=f"d{i}",
                    raw_body=body.encode(),
                    received_at=datetime.now(UTC),
                    event_id=f"e{i}",
                    event_type=event_type,
                    company_id=None,
                    connection_id=None,
                    generated_at=None,
                    unprocessable_reason=None,
                )
            )
            async with engine.begin() as connection:
                await connection.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.delivery_id == f"d{i}")
                    .values(status=status, processed_at=processed_at)
                )
        await writer.close()
        await engine.dispose()

    asyncio.run(work())


def statuses(url: str) -> dict[str, str]:
    async def work() -> dict[str, str]:
        engine = create_engine(url)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(WebhookEvent.event_id, WebhookEvent.status))
            ).all()
        await engine.dispose()
        return {str(event_id): status for event_id, status in rows}

    return asyncio.run(work())


def test_every_command_has_help() -> None:
    for command in (
        "serve",
        "worker",
        "migrate",
        "replay",
        "prune",
        "send-test-event",
        "check-config",
    ):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_replay_by_filter_queues_the_matching_events(env: dict[str, str]) -> None:
    url = env["DATABASE_URL"]
    seed(
        url,
        [
            ("read.completed", "dead", None),
            ("read.completed", "dead", None),
            ("bills.write.successful", "dead", None),
            ("read.completed", "processed", None),
        ],
    )
    result = runner.invoke(cli, ["replay", "--status", "dead", "--event-type", "read.completed"])
    assert result.exit_code == 0, result.output
    assert "queued 2 event(s)" in result.output
    assert statuses(url) == {"e0": "pending", "e1": "pending", "e2": "dead", "e3": "processed"}
    refused = runner.invoke(cli, ["replay"])
    assert refused.exit_code == 1
    assert "at least one filter" in refused.output


def test_prune_removes_only_old_finished_events(env: dict[str, str]) -> None:
    url = env["DATABASE_URL"]
    old = datetime.now(UTC) - timedelta(days=40)
    seed(
        url,
        [
            ("a", "processed", old),
            ("b", "ignored", old),
            ("c", "processed", datetime.now(UTC)),
            ("d", "dead", old),
            ("e", "pending", None),
            ("f", "unprocessable", None),
        ],
    )
    result = runner.invoke(cli, ["prune", "--older-than", "30d"])
    assert result.exit_code == 0, result.output
    assert "pruned 2 event(s)" in result.output
    assert set(statuses(url)) == {"e2", "e3", "e4", "e5"}
    assert runner.invoke(cli, ["prune", "--older-than", "soon"]).exit_code != 0


def test_check_config_says_what_is_wrong(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = runner.invoke(cli, ["check-config"])
    assert ok.exit_code == 0, ok.output
    assert "configuration ok" in ok.output
    monkeypatch.delenv("CODAT_API_KEY")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:9/nowhere")
    get_settings.cache_clear()
    bad = runner.invoke(cli, ["check-config"])
    assert bad.exit_code == 1
    assert "CODAT_API_KEY" in bad.output and "database" in bad.output


def test_send_test_event_reaches_a_running_service(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "PORT": str(port),
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "send-test-event",
                "--sample",
                "bills.write.unsuccessful",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith('200 {"status":"stored"}')
    finally:
        server.terminate()
        server.wait(timeout=30)
    stored = statuses(database)
    assert list(stored.values()) == [EventStatus.PENDING]
    assert uuid.UUID(next(iter(stored)))  # a fresh event id each time


def test_register_webhook_creates_the_consumer_once(
    env: dict[str, str], fake_codat_server: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import API_KEY

    fake, base_url = fake_codat_server
    fake.reset()
    monkeypatch.setenv("CODAT_BASE_URL", base_url)
    monkeypatch.setenv("CODAT_API_KEY", API_KEY)
    get_settings.cache_clear()
    first = runner.invoke(cli, ["register-webhook", "https://hooks.example.com/"])
    assert first.exit_code == 0, first.output
    assert "created" in first.output and "copy it from the Portal" in first.output
    [consumer] = fake.webhook_consumers
    assert consumer["url"] == "https://hooks.example.com/webhooks/codat"
    assert "bills.write.unsuccessful" in consumer["eventTypes"]
    again = runner.invoke(cli, ["register-webhook", "https://hooks.example.com"])
    assert "already registered" in again.output
    assert len(fake.webhook_consumers) == 1
