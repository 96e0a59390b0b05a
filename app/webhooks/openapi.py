"""How `POST /webhooks/codat` is described in the OpenAPI (/docs).

The route itself is a plain Starlette endpoint on a fast path that skips FastAPI, so
nothing here is used to read a request: this is documentation, kept beside the code whose
answers it describes (README's table says the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# One of the samples bundled for `send-test-event`: a real Codat body.
SAMPLE = Path(__file__).parents[1] / "samples" / "read.completed.json"

DESCRIPTION = """\
Codat's Bill Pay webhooks, as Svix delivers them. The signature is checked first, against
every secret in CODAT_WEBHOOK_SECRETS; nothing unsigned is parsed or stored, and the content
type is not trusted either way. A verified delivery is stored once, keyed by its delivery id
(`svix-id`, else `webhook-id`), and answered once it is durable; the worker processes it.

Served on the public listener (PORT); with INTERNAL_PORT set, the status API is not.
"""

_HEADERS = [
    ("webhook-id", "The delivery id, the same across Svix's retries (or `svix-id`)", "msg_2zM"),
    ("webhook-timestamp", "Unix seconds when signed (or `svix-timestamp`)", "1777888329"),
    (
        "webhook-signature",
        "`v1,<base64 HMAC-SHA256>`, space-separated if several (or `svix-signature`)",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    ),
]
PARAMETERS = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
        "example": example,
    }
    for name, description, example in _HEADERS
]
REQUEST_BODY = {
    "required": True,
    "description": "A Codat event, at most WEBHOOK_MAX_BODY_BYTES (1 MiB by default)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "Codat's event id"},
                    "eventType": {"type": "string", "description": "e.g. read.completed"},
                    "generatedDate": {
                        "type": "string",
                        "format": "date-time",
                        "description": "When Codat generated the event",
                    },
                    "payload": {"type": "object", "description": "Depends on eventType"},
                },
            },
            "example": json.loads(SAMPLE.read_bytes()),
        }
    },
}


def _answer(description: str, example: dict[str, str], field: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {field: {"type": "string"}},
                    "required": [field],
                },
                "example": example,
            }
        },
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _answer(
        "Verified and kept: `stored` (new), `duplicate` (this delivery id was stored before; "
        "nothing changes), or `unprocessable` (signed, but not a readable Codat event: kept "
        "as received, never processed, shown in the status API)",
        {"status": "stored"},
        "status",
    ),
    400: _answer(
        "Delivery id longer than 255 characters",
        {"error": "delivery id longer than 255 characters"},
        "error",
    ),
    401: _answer(
        "Missing, malformed or wrong signature, wrong secret, timestamp more than 5 minutes "
        "off, or a body that is not UTF-8; nothing stored",
        {"error": "invalid signature"},
        "error",
    ),
    413: _answer(
        "Body over WEBHOOK_MAX_BODY_BYTES, refused without reading past the limit",
        {"error": "body too large"},
        "error",
    ),
    503: _answer(
        "The database is unreachable; nothing stored, Codat retries",
        {"error": "storage unavailable, retry later"},
        "error",
    ),
}
OPENAPI_EXTRA = {"parameters": PARAMETERS, "requestBody": REQUEST_BODY}
