"""The ASGI apps and the runtime (engine, event writer, embedded worker) behind them.

By default one app serves everything. With INTERNAL_PORT set, `serve` runs two: a public
one with only the webhook and health checks, and an internal one with the status API,
/metrics and the docs. Both share one runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app import tracing
from app.api import changes, health, metrics, status
from app.api.docs import install_docs, restore_example_nulls
from app.api.errors import install_error_handlers
from app.api.guard import ApiGuard
from app.changes.feed import CHANNEL as CHANGES_CHANNEL
from app.changes.feed import ChangeSignal
from app.config import Settings, get_settings
from app.dashboard.routes import install as install_dashboard
from app.db import WEB_POOL_SIZE, create_engine, session_factory, worker_pool_size
from app.processing.context import build_context
from app.processing.notify import listen_for_work
from app.processing.worker import HelperTaskDied, Worker
from app.webhooks import WEBHOOK_PATH
from app.webhooks import openapi as webhook_openapi
from app.webhooks.route import Receiver, codat_webhook_endpoint
from app.webhooks.signature import SignatureVerifier
from app.webhooks.store import EventWriter

# Asked every few seconds by probes and Prometheus: a trace each would bury the rest.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
API_DESCRIPTION = """\
Receives Codat's Bill Pay webhooks, keeps a local copy of each company's payables data, and
tells what happened: events, companies and the freshness of their data, the local copy,
write outcomes, the rate limit.

The status API (`/api/v1`) takes `Authorization: Bearer <token>` (STATUS_API_TOKENS; use
**Authorize**). Lists take `limit` and `cursor` (the previous page's `next_cursor`). Errors
are `{"error": "..."}`. Times are ISO 8601, UTC. Bodies are at most 16 KiB.
"""


class Runtime:
    """What one process owns, started by the first app that needs it, stopped by the last."""

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self._own_engine = engine is None
        pool_size = WEB_POOL_SIZE + (worker_pool_size(settings) if settings.embedded_worker else 0)
        self.engine = engine or create_engine(settings.database_url, pool_size=pool_size)
        self.sessions = session_factory(self.engine)
        self.worker: Worker | None = None
        if settings.embedded_worker:
            self.worker = Worker(build_context(settings, self.engine))
        self.writer = EventWriter(self.engine, on_stored=self.worker.wake if self.worker else None)
        self.receiver = Receiver(
            verifier=SignatureVerifier(
                [secret.get_secret_value() for secret in settings.codat_webhook_secrets]
            ),
            writer=self.writer,
            max_body_bytes=settings.webhook_max_body_bytes,
        )
        self.api_tokens = [t.get_secret_value().encode() for t in settings.status_api_tokens]
        self._users = 0
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None
        self.worker_failure: str | None = None
        # Wakes long-polls of the change feed: NOTIFY on PostgreSQL, else their poll.
        self.change_signal = ChangeSignal()
        self._listener: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        self._users += 1
        if self._users == 1:
            # What start-up allocated lives as long as the process: keep the collector off it.
            gc.freeze()
            # The group commit serves many requests at once: its statements are no one's.
            with tracing.untraced():
                self.writer.start()
                self._listener = asyncio.create_task(
                    listen_for_work(self.engine, self.change_signal.notify, CHANGES_CHANNEL)
                )
            if self.worker:
                self._worker_task = asyncio.create_task(self.worker.run(self._stop))
                self._worker_task.add_done_callback(self._on_worker_done)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        """The embedded worker stopped on its own (a helper task failed, and it said why):
        liveness fails from now on, so that the process is restarted."""
        if not task.cancelled() and task.exception() is not None:
            # Only the helper's name or the error's class: this answers on the public port.
            error = task.exception()
            reason = str(error) if isinstance(error, HelperTaskDied) else type(error).__name__
            self.worker_failure = f"embedded worker stopped: {reason}"

    async def release(self) -> None:
        self._users -= 1
        if self._users:
            return
        await self.writer.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self.worker and self._worker_task:
            self._stop.set()
            with contextlib.suppress(HelperTaskDied):  # logged when it happened
                await self._worker_task
            await self.worker.ctx.codat.aclose()
        if self._own_engine:
            await self.engine.dispose()


class ServiceApp(FastAPI):
    """FastAPI, except that webhook deliveries skip its middleware stack.

    The webhook route runs for every delivery and needs none of FastAPI's conveniences;
    measured, the middleware was about 40% of its time (bench/receive.py).
    """

    webhook_fast_path = False
    # The fast path itself, inside OpenTelemetry's ASGI middleware when tracing is on.
    webhook_asgi: ASGIApp
    untraced_paths: frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.webhook_fast_path
            and scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            await self.webhook_asgi(scope, receive, send)
            return
        if scope.get("path") in self.untraced_paths:
            with tracing.untraced():
                await super().__call__(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = restore_example_nulls(super().openapi())
        return self.openapi_schema


async def serve_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    response = await codat_webhook_endpoint(Request(scope, receive))
    await response(scope, receive, send)


def _app(runtime: Runtime, *, public: bool, internal: bool) -> ServiceApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.acquire()
        try:
            yield
        finally:
            await runtime.release()

    app = ServiceApp(
        title="Codat Bill Pay webhook receiver",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files (install_docs), not a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if internal else None,
        # Starlette builds a slash redirect's Location from the Host header: a client
        # could make this service redirect to a host of its choosing.
        redirect_slashes=False,
    )
    app.state.settings = runtime.settings
    app.state.engine = runtime.engine
    app.state.sessions = runtime.sessions
    app.state.receiver = runtime.receiver
    app.state.api_tokens = runtime.api_tokens
    app.state.change_signal = runtime.change_signal
    app.state.runtime = runtime
    app.webhook_asgi = serve_webhook
    if tracing.enabled():
        tracing.instrument_fastapi(app)
        app.webhook_asgi = tracing.instrument_asgi(serve_webhook)
        app.untraced_paths = UNTRACED_PATHS
    install_error_handlers(app)
    app.include_router(health.router)
    if public:
        app.webhook_fast_path = True
        # For the docs and for other methods (405) only: POST takes the fast path.
        app.add_api_route(
            WEBHOOK_PATH,
            codat_webhook_endpoint,
            methods=["POST"],
            tags=["webhooks"],
            summary="Receive a Codat webhook",
            description=webhook_openapi.DESCRIPTION,
            responses=webhook_openapi.RESPONSES,
            openapi_extra=webhook_openapi.OPENAPI_EXTRA,
        )
    if internal:
        app.add_middleware(ApiGuard, tokens=runtime.api_tokens)
        app.include_router(status.router)
        app.include_router(changes.router)
        app.include_router(metrics.router)
        install_docs(app)
        install_dashboard(app)
    return app


def create_app(
    settings: Settings | None = None, *, engine: AsyncEngine | None = None
) -> ServiceApp:
    """One app with every route: the default layout."""
    return _app(Runtime(settings or get_settings(), engine), public=True, internal=True)


def create_split_apps(
    settings: Settings, *, engine: AsyncEngine | None = None
) -> tuple[ServiceApp, ServiceApp]:
    """(public, internal): the webhook faces the internet, the status API does not."""
    runtime = Runtime(settings, engine)
    return _app(runtime, public=True, internal=False), _app(runtime, public=False, internal=True)
