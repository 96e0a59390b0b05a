"""Svix signature checks against every configured secret (rotation without downtime)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence

from svix.webhooks import Webhook, WebhookVerificationError

SIGNATURE_HEADERS = tuple(
    f"{prefix}-{part}"
    for prefix in ("svix", "webhook")
    for part in ("id", "timestamp", "signature")
)


class InvalidSignature(Exception):
    """The delivery is not provably from Codat; the reason is for logs, not responses."""


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Pass if any secret verifies; svix reads `svix-*` or `webhook-*` headers.

        A repeated signature header is refused: svix checks the last value while a
        mapping's `get` gives the first, so the delivery could be stored under an id its
        signature does not cover. (Headers that can repeat have `getlist`.)"""
        getlist = getattr(headers, "getlist", None)
        if getlist is not None and any(len(getlist(name)) > 1 for name in SIGNATURE_HEADERS):
            raise InvalidSignature("repeated signature header")
        signed = signed_headers(headers)
        reason = "no secret matched"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, signed)
                return
            except WebhookVerificationError as exc:
                reason = str(exc)
            # Hostile headers or bodies make svix raise more than its own error.
            except (ValueError, binascii.Error, UnicodeDecodeError, TypeError) as exc:
                reason = f"malformed signature input ({type(exc).__name__})"
        raise InvalidSignature(reason)


def _header(headers: Mapping[str, str], part: str) -> str:
    """`svix-<part>`, else `webhook-<part>`: an empty one counts as absent."""
    return headers.get(f"svix-{part}") or headers.get(f"webhook-{part}") or ""


def signed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The one header map svix is given, built by the rule `delivery_id` follows, so the id
    a signature covers is always the id the delivery is stored under, whatever svix's own
    fallback between the two spellings (svix 1.x and 2.x differ)."""
    return {f"webhook-{part}": _header(headers, part) for part in ("id", "timestamp", "signature")}


def delivery_id(headers: Mapping[str, str]) -> str:
    """The id that stays the same across Svix retries; the id the signature covers."""
    return _header(headers, "id")
