"""An internal endpoint as a user would write one: `svix`'s `Webhook.verify` on every
request, the change id (`webhook-id`) to drop repeats, and faults the tests turn on."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

NOTIFY_SECRET = "whsec_bm90aWZpY2F0aW9ucy1mb3ItdGhlLXBsYXRmb3Jt"
OTHER_SECRET = "whsec_c2Vjb25kLWVuZHBvaW50LW9mLXRoZS10ZXN0cw=="


class Consumer:
    """Verifies, then keeps each change once (by its id); counts every request."""

    def __init__(self, secret: str = NOTIFY_SECRET) -> None:
        self._webhook = Webhook(secret)
        self._lock = threading.Lock()
        self.received: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        # The W3C trace context each change arrived with (None without tracing).
        self.traceparents: dict[str, str | None] = {}
        self.rejected = 0
        # Faults: answer 500 to this many requests; hold requests while `hold` is set.
        self.fail_next = 0
        self.hold = threading.Event()
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            self._webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self._lock:
                self.rejected += 1
            return Response(status_code=400)
        with self._lock:
            self.requests[request.headers["webhook-id"]] += 1
            failing = self.fail_next > 0
            self.fail_next -= 1 if failing else 0
        # A request in flight when its sender is killed; set from the test's thread.
        while self.hold.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if failing:
            return Response(status_code=500)
        with self._lock:
            self.received.setdefault(request.headers["webhook-id"], json.loads(body))
            self.traceparents[request.headers["webhook-id"]] = request.headers.get("traceparent")
        return Response(status_code=204)
