"""Configuration as an operator meets it: URLs as written, secrets required and hidden."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.db import async_url
from tests.support.signing import ROTATED_SECRET, TEST_SECRET


@pytest.mark.parametrize(
    ("written", "driver"),
    [
        ("sqlite:///var/x.db", "sqlite+aiosqlite"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@db/app", "postgresql+asyncpg"),
        ("postgres://u:p@db/app", "postgresql+asyncpg"),
        ("postgresql+psycopg://u:p@db/app", "postgresql+asyncpg"),
    ],
)
def test_database_urls_as_users_write_them(written: str, driver: str) -> None:
    assert async_url(written).drivername == driver


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        async_url("mysql://u@h/db")


def test_secrets_are_comma_separated_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODAT_WEBHOOK_SECRETS", f" {TEST_SECRET} , {ROTATED_SECRET} ")
    settings = Settings()
    assert [s.get_secret_value() for s in settings.codat_webhook_secrets] == [
        TEST_SECRET,
        ROTATED_SECRET,
    ]
    assert TEST_SECRET not in repr(settings)
    assert TEST_SECRET not in str(settings.model_dump())


def test_a_secret_must_look_like_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODAT_WEBHOOK_SECRETS", "not-a-secret")
    with pytest.raises(ValidationError, match="whsec_"):
        Settings()


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_to_start_without_a_secret_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CODAT_WEBHOOK_SECRETS"}
    result = _serve(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CODAT_WEBHOOK_SECRETS" in lines[0]


def test_a_bad_secret_is_named_but_not_echoed() -> None:
    env = {**os.environ, "CODAT_WEBHOOK_SECRETS": "s3cr3t-value-that-is-wrong"}
    result = _serve(env)
    assert result.returncode == 2
    assert "CODAT_WEBHOOK_SECRETS" in result.stderr
    assert "s3cr3t-value-that-is-wrong" not in result.stderr + result.stdout
