"""Settings: every knob is an environment variable, read once at start-up."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.codat.base import BASE_URL

DEFAULT_DATABASE_URL = "sqlite:///./var/codat-webhooks.db"
# `make run` writes the development settings it chose (never ones it was given) here, beside
# the default database, so that commands run from the checkout in another shell find them.
# CODAT_WEBHOOKS_DEV_ENV names another file; empty turns the fallback off.
DEV_ENV_FILE = "var/dev.env"


def _split_commas(value: object) -> object:
    """Let lists be written as `a,b` in the environment, as operators expect."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class NotifyEndpoint(BaseModel):
    """One internal endpoint that is sent the changes (Standard Webhooks, signed)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    secret: SecretStr
    # Change types to send (`company.ready`, ...); none means every type.
    types: list[str] | None = None

    @field_validator("secret")
    @classmethod
    def _secret_is_whsec(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            key = base64.b64decode(text.removeprefix("whsec_") + "==", validate=False)
        except ValueError:
            key = b""
        if not text.startswith("whsec_") or not key:
            raise ValueError("the secret must be whsec_ followed by base64")
        return value

    def wants(self, change_type: str) -> bool:
        return self.types is None or change_type in self.types


class DatabaseSettings(BaseSettings):
    """What `migrate` needs: only the database, not the webhook secrets."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL


class Settings(DatabaseSettings):
    """The service's configuration. Secrets are `SecretStr` so they never print."""

    codat_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(min_length=1)
    webhook_max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Set INTERNAL_PORT to serve /api, /metrics and /docs on a second, internal listener.
    internal_host: str = "127.0.0.1"
    internal_port: int | None = Field(default=None, ge=0, le=65535)
    status_api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # How long a dashboard sign-in (with one of the status API tokens) lasts.
    dashboard_session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    # The HTTP edge (app/server.py): how long a request may take to send its headers and
    # its body, how large its headers may be, and how many requests and connections one
    # process holds at once. Codat sends ~1 KB at once: none of these is near for it.
    http_headers_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=20.0, gt=0)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    http_max_connections: int = Field(default=1000, ge=1)
    http_keep_alive_seconds: int = Field(default=5, ge=1)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    codat_api_key: SecretStr = SecretStr("")
    codat_base_url: str = BASE_URL
    codat_timeout_seconds: float = Field(default=30.0, gt=0)
    codat_max_concurrency: int = Field(default=32, ge=1)
    codat_page_size: int = Field(default=5000, ge=1, le=5000)
    bill_pay_variant: Literal["async", "sync"] = "async"

    # read.completed events for one company and type arriving this close share one pull.
    pull_debounce_seconds: float = Field(default=2.0, ge=0)

    # Freshness: refresh after writes, retry failed initial reads, sweep and reconcile.
    refresh_debounce_seconds: float = Field(default=30.0, ge=0)
    refresh_max_retries: int = Field(default=3, ge=0)
    refresh_retry_base_seconds: float = Field(default=300.0, ge=0)
    freshness_max_age: timedelta = timedelta(hours=24)
    sweep_interval: timedelta = timedelta(minutes=15)
    sweep_quota_share: float = Field(default=0.2, ge=0, le=1)
    codat_daily_quota: int | None = Field(default=None, ge=1)
    reconcile_interval: timedelta = timedelta(hours=6)
    reconcile_push_lookback: timedelta = timedelta(days=7)
    # Listing push operations costs a call per company: every reconcile for companies that
    # write, at least this often for the others (no longer than the lookback).
    reconcile_push_interval: timedelta = timedelta(days=7)

    # Notifications of changes: JSON, `[{"url": ..., "secret": "whsec_...", "types": [...]}]`.
    notify_endpoints: list[NotifyEndpoint] = Field(default_factory=list)
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A delivery is retried with backoff for this long after its change, then goes dead.
    notify_retry_span: timedelta = timedelta(days=1)
    notify_retry_base_seconds: float = Field(default=5.0, ge=0)
    notify_retry_max_seconds: float = Field(default=3600.0, ge=0)
    notify_concurrency: int = Field(default=8, ge=1, le=256)
    # Workers send deliveries beside their events unless this is off; then run
    # `codat-webhooks notifier` processes, so that sending never takes a worker's CPU.
    notify_in_worker: bool = True
    # After a wake-up, wait this long so that the changes of several events are claimed,
    # sent and settled together (two transactions a batch, not two a change).
    notify_batch_wait_seconds: float = Field(default=0.05, ge=0, le=5)

    embedded_worker: bool = True
    # A worker on its own serves its Prometheus counters here (on INTERNAL_HOST) when set.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_concurrency: int = Field(default=16, ge=1)
    worker_max_attempts: int = Field(default=10, ge=1)
    worker_lease_seconds: float = Field(default=60.0, gt=0)
    worker_poll_interval: float = Field(default=0.5, gt=0)
    worker_retry_base_seconds: float = Field(default=10.0, ge=0)
    worker_retry_max_seconds: float = Field(default=3600.0, ge=0)
    worker_shutdown_grace_seconds: float = Field(default=20.0, ge=0)

    @field_validator("codat_webhook_secrets", "status_api_tokens", mode="before")
    @classmethod
    def _secrets_from_commas(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("codat_webhook_secrets")
    @classmethod
    def _secrets_look_like_svix(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            if not secret.get_secret_value().startswith("whsec_"):
                raise ValueError(
                    "each secret must start with whsec_ (copy it from the Codat Portal)"
                )
        return value


def dev_env_file() -> Path | None:
    """The file `make run` left its development settings in, if there is one."""
    path = Path(os.environ.get("CODAT_WEBHOOKS_DEV_ENV", DEV_ENV_FILE))
    return path if str(path) not in ("", ".") and path.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` instead."""
    return Settings()
