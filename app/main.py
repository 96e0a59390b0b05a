"""create_app(): the routes and the lifespan that owns the engine and the writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import health
from app.config import Settings, get_settings
from app.db import create_engine
from app.processing.context import build_context
from app.processing.worker import Worker
from app.webhooks.route import Receiver, codat_webhook_endpoint
from app.webhooks.signature import SignatureVerifier
from app.webhooks.store import EventWriter

WEBHOOK_PATH = "/webhooks/codat"


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine or create_engine(settings.database_url)
        worker: Worker | None = None
        if settings.embedded_worker:
            worker = Worker(build_context(settings, app.state.engine))
        writer = EventWriter(app.state.engine, on_stored=worker.wake if worker else None)
        writer.start()
        app.state.receiver = Receiver(
            verifier=SignatureVerifier(
                [secret.get_secret_value() for secret in settings.codat_webhook_secrets]
            ),
            writer=writer,
            max_body_bytes=settings.webhook_max_body_bytes,
        )
        stop = asyncio.Event()
        worker_task = asyncio.create_task(worker.run(stop)) if worker else None
        try:
            yield
        finally:
            await writer.close()
            if worker and worker_task:
                stop.set()
                await worker_task
                await worker.ctx.codat.aclose()
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(
        title="Codat Bill Pay webhook receiver",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_route(WEBHOOK_PATH, codat_webhook_endpoint, methods=["POST"], include_in_schema=False)
    app.include_router(health.router)
    return app
