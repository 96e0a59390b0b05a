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
import typer
from sqlalchemy import insert, select
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.db import create_engine
from app.models import Company, EventStatus, Job, WebhookEvent
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
        for table in (WebhookEvent, Job, Company):
            await connection.execute(delete(table))
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
        "sandbox",
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
    dry_run = ["replay", "--status", "dead", "--event-type", "read.completed", "--dry-run"]
    counted = runner.invoke(cli, dry_run)
    assert counted.exit_code == 0, counted.output
    assert "would queue 2 event(s)" in counted.output
    assert set(statuses(url).values()) == {"dead", "processed"}
    result = runner.invoke(cli, ["replay", "--status", "dead", "--event-type", "read.completed"])
    assert result.exit_code == 0, result.output
    assert "queued 2 event(s)" in result.output
    assert statuses(url) == {"e0": "pending", "e1": "pending", "e2": "dead", "e3": "processed"}
    refused = runner.invoke(cli, ["replay"])
    assert refused.exit_code == 1
    assert "at least one filter" in refused.output


def jobs(url: str) -> list[tuple[str, str | None]]:
    """(kind, data type) of every queued job, in key order."""

    async def work() -> list[tuple[str, str | None]]:
        engine = create_engine(url)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(Job.kind, Job.data_type).order_by(Job.key))
            ).all()
        await engine.dispose()
        return [(kind, data_type) for kind, data_type in rows]

    return asyncio.run(work())


def test_refresh_and_reconcile_queue_jobs_and_refuse_bad_input(env: dict[str, str]) -> None:
    url = env["DATABASE_URL"]

    async def add_company() -> None:
        engine = create_engine(url)
        async with engine.begin() as connection:
            now = datetime.now(UTC)
            await connection.execute(
                insert(Company).values(id="c1", created_at=now, updated_at=now)
            )
        await engine.dispose()

    asyncio.run(add_company())
    unknown = runner.invoke(cli, ["refresh", "--data-type", "bills", "--data-type", "nope"])
    assert unknown.exit_code == 1
    assert "unknown data types: nope" in unknown.output
    missing = runner.invoke(cli, ["reconcile", "--company-id", "c2"])
    assert missing.exit_code == 1
    assert "no company c2" in missing.output
    assert jobs(url) == []

    refreshed = runner.invoke(cli, ["refresh", "--data-type", "bills", "--data-type", "suppliers"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "queued refreshes of bills, suppliers for 1 compan(y/ies)" in refreshed.output
    reconciled = runner.invoke(cli, ["reconcile"])
    assert reconciled.exit_code == 0, reconciled.output
    assert "queued reconcile for 1 compan(y/ies)" in reconciled.output
    assert sorted(jobs(url)) == [
        ("reconcile", None),
        ("refresh", "bills"),
        ("refresh", "suppliers"),
    ]


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
    for problem in ("CODAT_API_KEY is not set", "database unreachable"):
        assert bad.output.count(problem) == 1, f"said once: {bad.output}"


DEV_ENV_NAMES = ("CODAT_WEBHOOK_SECRETS", "STATUS_API_TOKENS", "CODAT_API_KEY", "CODAT_BASE_URL")


def test_commands_beside_make_run_take_its_development_settings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's commands, pasted into a second shell, need no exports."""
    from app.cli import load_settings

    dev_env = tmp_path / "dev.env"
    dev_env.write_text(
        f"CODAT_WEBHOOK_SECRETS={TEST_SECRET}\nSTATUS_API_TOKENS=dev-token\n"
        "CODAT_API_KEY=sandbox-key\nCODAT_BASE_URL=http://127.0.0.1:8100\nPORT=8123\n"
    )
    monkeypatch.setenv("CODAT_WEBHOOKS_DEV_ENV", str(dev_env))
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in (*DEV_ENV_NAMES, "PORT"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    ok = runner.invoke(cli, ["check-config"])
    assert ok.exit_code == 0, ok.output
    assert "configuration ok" in ok.output and "Codat at http://127.0.0.1:8100" in ok.output
    assert f"from {dev_env}: {', '.join(DEV_ENV_NAMES)}, PORT" in ok.stderr
    assert TEST_SECRET not in ok.output and "sandbox-key" not in ok.output, "names, not values"

    monkeypatch.setenv("CODAT_BASE_URL", "https://api.codat.io")  # the environment wins
    settings = load_settings(dev_env=True)
    assert settings.codat_base_url == "https://api.codat.io" and settings.port == 8123
    # `serve` and `worker` read the environment alone: no secret there, no start.
    with pytest.raises(typer.Exit) as refused:
        load_settings()
    assert refused.value.exit_code == 2
    get_settings.cache_clear()


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

        def send(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "app.cli", "send-test-event", *args],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )

        sent = send("--sample", "bills.write.unsuccessful")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith('200 {"status":"stored"}')
        again = send("--sample", "read.completed", "--delivery-id", "msg_given", "--repeat", "2")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [
            '200 {"status":"stored"} (delivery msg_given)',
            '200 {"status":"duplicate"} (delivery msg_given)',
        ]
        # No worker runs here (EMBEDDED_WORKER=false): the wait ends, and says why.
        waited = send("--sample", "read.completed", "--wait", "0.5")
        assert waited.returncode == 1
        assert "still pending" in waited.stdout and "is the worker running" in waited.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    stored = statuses(database)
    assert list(stored.values()) == [EventStatus.PENDING] * 3, "the repeat is stored once"
    assert all(uuid.UUID(event_id) for event_id in stored)  # a fresh event id each time


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


def test_a_crash_prints_no_local_variable_so_no_database_password() -> None:
    """typer's pretty tracebacks printed every frame's locals (DATABASE_URL among them)
    when its default was on; the console script turns them off, whatever typer's default."""
    assert cli.pretty_exceptions_show_locals is False
    password = "Pa55-for-the-traceback-test"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        # Nothing listens on port 1: the migration fails with a traceback.
        "DATABASE_URL": f"postgresql://codat:{password}@127.0.0.1:1/codat",
        "_TYPER_STANDARD_TRACEBACK": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" in output, output[-2000:]
    assert password not in output


def test_the_notifier_refuses_to_start_with_no_endpoint(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_ENDPOINTS", raising=False)
    result = runner.invoke(cli, ["notifier"])
    assert result.exit_code == 2
    assert "NOTIFY_ENDPOINTS" in result.output
