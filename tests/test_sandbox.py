"""The sandbox `make run` calls instead of Codat: it answers for the company of the bundled
samples as Codat's OpenAPI documents, every sample is processed against it without a
failure, and `codat-webhooks sandbox` serves it and stops with the process that started it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import EventStatus
from app.processing.context import Context
from app.processing.worker import Worker
from app.sandbox import SANDBOX_API_KEY
from app.sandbox.demo import SAMPLES, DemoCompany, demo_company, seed
from app.sandbox.fake_codat import LIST_PATHS, FakeCodat, run_fake_codat
from app.sandbox.server import finish_queued_pulls
from tests.support import oas
from tests.support.flow import assert_local_copy_equals_fake, events
from tests.support.ports import free_port
from tests.support.signing import sign

V1, PLATFORM = oas.PAYABLES_V1, oas.PLATFORM
BASIC = {"Authorization": "Basic " + base64.b64encode(SANDBOX_API_KEY.encode()).decode()}


def assert_valid(validator: oas.SchemaValidator, instance: object) -> None:
    problems = oas.error_messages(validator, instance)
    assert problems == [], "\n".join(problems)


@dataclass
class Sandbox:
    fake: FakeCodat
    company: DemoCompany
    client: httpx.Client


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    fake = FakeCodat(api_key=SANDBOX_API_KEY)
    company = seed(fake)
    with (
        run_fake_codat(fake) as base_url,
        httpx.Client(base_url=base_url, headers=BASIC, timeout=10) as client,
    ):
        yield Sandbox(fake, company, client)


def test_the_sandbox_company_is_the_one_the_samples_name() -> None:
    company = demo_company()
    for path in SAMPLES.glob("*.json"):
        payload = json.loads(path.read_bytes())["payload"]
        if "referenceCompany" in payload:
            assert payload["referenceCompany"]["id"] == company.id, path.name
        if "connectionId" in payload:
            assert payload["connectionId"] == company.connection_id, path.name
    assert set(LIST_PATHS.values()) | {"company", "bankAccounts"} == set(company.data_types)


def test_every_answer_for_the_sample_company_is_as_codat_documents_it(sandbox: Sandbox) -> None:
    company, client = sandbox.company, sandbox.client
    base = f"/companies/{company.id}"
    for segment in sorted(LIST_PATHS):
        response = client.get(f"{base}/data/{segment}")
        assert response.status_code == 200, (segment, response.text)
        body = response.json()
        assert body["results"], f"the sandbox has {segment}"
        assert_valid(
            oas.response_validator(V1, f"/companies/{{companyId}}/data/{segment}", "get"), body
        )
    accounts = client.get(f"{base}/connections/{company.connection_id}/data/bankAccounts").json()
    assert accounts["results"]
    for record in accounts["results"]:
        assert_valid(oas.load_schema_validator(V1, "BankAccount"), record)
    info = client.get(f"{base}/data/info")
    assert_valid(oas.response_validator(V1, "/companies/{companyId}/data/info", "get"), info.json())
    status = client.get(f"{base}/dataStatus").json()
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/dataStatus", "get"), status
    )
    assert {entry["currentStatus"] for entry in status.values()} == {"Complete"}
    push = oas.response_validator(PLATFORM, "/companies/{companyId}/push/{pushOperationKey}", "get")
    for path in SAMPLES.glob("*.write.*.json"):
        payload = json.loads(path.read_bytes())["payload"]
        operation = client.get(f"{base}/push/{payload['id']}")
        assert operation.status_code == 200, path.name
        assert_valid(push, operation.json())
        assert operation.json()["status"] == payload["status"], path.name
    assert (
        client.get(f"{base}/dataStatus", headers={"Authorization": "Basic eA=="}).status_code == 401
    )


def test_a_queued_refresh_finishes_as_codat_s_read_would(sandbox: Sandbox) -> None:
    company, client = sandbox.company, sandbox.client
    before = client.get(f"/companies/{company.id}/dataStatus").json()["bills"]
    queued = client.post(f"/companies/{company.id}/data/queue/bills")
    assert queued.status_code == 200, queued.text
    assert client.get(f"/companies/{company.id}/dataStatus").json()["bills"]["currentStatus"] == (
        "Queued"
    )
    assert finish_queued_pulls(sandbox.fake) == 1  # what the sandbox does every second
    after = client.get(f"/companies/{company.id}/dataStatus").json()["bills"]
    assert after["currentStatus"] == "Complete"
    assert after["latestSuccessfulSyncId"] == queued.json()["id"] != before["latestSyncId"]


async def test_every_bundled_sample_is_processed_against_the_sandbox(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    ctx: Context,
    fake_codat: FakeCodat,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What `send-test-event --sample NAME` does under `make run`, for every NAME."""
    seed(fake_codat)
    caplog.set_level(logging.INFO)
    # The disconnection last: after it, the company gets no pull until it is linked again.
    paths = sorted(SAMPLES.glob("*.json"), key=lambda p: (p.name.startswith("connection."), p))
    for path in paths:
        if path.name.startswith("connection."):
            await Worker(ctx).run_until_idle()
        raw = path.read_bytes()
        response = await client.post("/webhooks/codat", content=raw, headers=sign(raw))
        assert response.json() == {"status": "stored"}, path.name
    await Worker(ctx).run_until_idle()

    stored = await events(engine)
    assert {event.status for event in stored} <= {EventStatus.PROCESSED, EventStatus.IGNORED}
    for data_type in ("bills", "suppliers", "billPayments", "chartOfAccounts"):
        await assert_local_copy_equals_fake(engine, fake_codat, data_type)
    processed = [r for r in caplog.records if r.getMessage() == "event processed"]
    assert sorted(r.delivery_id for r in processed) == sorted(e.delivery_id for e in stored)  # type: ignore[attr-defined]
    assert {r.outcome for r in processed} <= {"processed", "ignored"}  # type: ignore[attr-defined]
    assert all(r.duration_ms >= 0 for r in processed)  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "nothing failed"


def test_the_sandbox_command_serves_and_stops_with_the_process_that_started_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    # A parent that starts the sandbox as make run's shell does, then waits to be killed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-m', 'app.cli', 'sandbox', '--port', '{port}',"
            " '--exit-with-parent'])\n"
            "time.sleep(600)\n",
        ],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    url = f"http://127.0.0.1:{port}/companies/{demo_company().id}/data/bills"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(url, headers=BASIC, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert [bill["id"] for bill in response.json()["results"]][:2] == ["bill-1", "bill-2"]
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, headers=BASIC, timeout=1)
        except httpx.TransportError:
            break  # stopped
        assert time.monotonic() < deadline, "the sandbox outlived the process that started it"
        time.sleep(0.2)
