"""POST /webhooks/codat: the one public, hot route, kept lean on purpose.

It is a plain Starlette endpoint (no FastAPI dependency injection) because it runs
for every delivery; the logic is in `receive_delivery`, a plain function.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app import tracing
from app.codat.datatypes import event_type_label
from app.metrics import WEBHOOKS_RECEIVED
from app.webhooks.envelope import clamped_to_receipt, read_facts
from app.webhooks.signature import InvalidSignature, SignatureVerifier, delivery_id
from app.webhooks.store import DatabaseUnavailable, EventWriter, IncomingEvent, StoreResult

log = logging.getLogger(__name__)

MAX_DELIVERY_ID = 255  # the delivery_id column


@dataclass(frozen=True, slots=True)
class Receiver:
    verifier: SignatureVerifier
    writer: EventWriter
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, str]


class BodyTooLarge(Exception):
    pass


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """Stop at the limit instead of buffering whatever a client chooses to send."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _rejected(reason: str, status_code: int, message: str) -> Answer:
    WEBHOOKS_RECEIVED.labels(event_type="", outcome=reason).inc()
    return Answer(status_code, {"error": message})


def incoming_event(delivery_id: str, body: bytes, received_at: datetime) -> IncomingEvent:
    """A verified body as the row to store: what it says, or why it cannot be read."""
    facts = read_facts(body)
    generated_at = clamped_to_receipt(facts.generated_at, received_at)
    if generated_at != facts.generated_at:
        log.warning(
            "generatedDate in the future: ordered as received",
            extra={"delivery_id": delivery_id, "generated_date": str(facts.generated_at)},
        )
    return IncomingEvent(
        delivery_id=delivery_id,
        raw_body=body,
        received_at=received_at,
        event_id=facts.event_id,
        event_type=facts.event_type,
        company_id=facts.company_id,
        connection_id=facts.connection_id,
        generated_at=generated_at,
        unprocessable_reason=facts.unprocessable,
        traceparent=tracing.traceparent(),
    )


async def receive_delivery(receiver: Receiver, body: bytes, headers: Mapping[str, str]) -> Answer:
    """Verify, then store once. Nothing unsigned is parsed, stored or logged."""
    try:
        receiver.verifier.verify(body, headers)
    except InvalidSignature as exc:
        log.warning("webhook rejected", extra={"reason": str(exc), "size": len(body)})
        return _rejected("rejected_signature", 401, "invalid signature")
    delivery = delivery_id(headers)
    if len(delivery) > MAX_DELIVERY_ID:
        # Codat's ids are short (`msg_...`); a longer one could never be stored.
        return _rejected("rejected_delivery_id", 400, "delivery id longer than 255 characters")
    event = incoming_event(delivery, body, datetime.now(UTC))
    event_type = event_type_label(event.event_type)
    try:
        result = await receiver.writer.store(event)
    except DatabaseUnavailable:
        WEBHOOKS_RECEIVED.labels(event_type=event_type, outcome="unavailable").inc()
        return Answer(503, {"error": "storage unavailable, retry later"})
    outcome = result.value
    if event.unprocessable_reason is not None and result is StoreResult.UNPROCESSABLE:
        log.warning(
            "signed body kept as unprocessable",
            extra={"delivery_id": event.delivery_id, "reason": event.unprocessable_reason},
        )
    WEBHOOKS_RECEIVED.labels(event_type=event_type, outcome=outcome).inc()
    return Answer(200, {"status": result.answer})


# Said with a 413: the server would otherwise read (and drop) the rest of the body to keep
# the connection alive, which is what the cap is there to avoid.
CLOSE = {"Connection": "close"}


async def codat_webhook_endpoint(request: Request) -> Response:
    receiver: Receiver = request.app.state.receiver
    try:
        body = await read_limited(
            request.stream(), request.headers.get("content-length"), receiver.max_body_bytes
        )
    except BodyTooLarge:
        log.warning("webhook rejected", extra={"reason": "body over the size limit"})
        answer = _rejected("rejected_size", 413, "body too large")
        return JSONResponse(answer.body, status_code=answer.status_code, headers=CLOSE)
    except ClientDisconnect:
        # The sender went away mid-body (or took too long, app/server.py): nobody waits
        # for an answer, and nothing was stored. Not the service's error.
        log.debug("webhook sender disconnected before its body was read")
        return Response(status_code=400)
    answer = await receive_delivery(receiver, body, request.headers)
    return JSONResponse(answer.body, status_code=answer.status_code)
