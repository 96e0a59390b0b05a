"""Property-based: schemathesis drives every status API operation from its OpenAPI with
generated parameters and bodies, against a real server; no answer may be a 500, and every
answer must match its documented schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.result import Ok

from tests.support.ports import free_port
from tests.support.signing import TEST_SECRET

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service (uvicorn) on SQLite, with a few events so lists are not empty."""
    folder = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder / 'fuzz.db'}",
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "STATUS_API_TOKENS": TOKEN,
        "PORT": str(port),
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "ERROR",
    }
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        for sample in ("read.completed", "bills.write.unsuccessful", "connection.disconnected"):
            subprocess.run(
                [sys.executable, "-m", "app.cli", "send-test-event", "--sample", sample],
                env=env,
                check=True,
                capture_output=True,
            )
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_generated_request_gets_a_500_or_an_undocumented_answer(server: str) -> None:
    # Schemathesis's own pytest plugin does not run on this pytest: drive hypothesis here.
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations: list[Any] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI is invalid: {result}"
        operation = result.ok()
        if operation.path.startswith("/api/"):
            operations.append(operation)
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            if case.query and "wait" in case.query:
                # A long-poll waits by design (tests/test_changes.py): not up to 30 s here.
                case.query["wait"] = 0
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"},
                checks=[not_a_server_error, response_schema_conformance],
            )

        no_server_error()
