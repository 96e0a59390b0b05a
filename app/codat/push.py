"""Codat's push operation statuses (`PushOperationStatus` in its OpenAPI)."""

from __future__ import annotations

import enum


class PushOperationStatus(enum.StrEnum):
    """What a write to the SMB's accounting software became; webhooks carry the same."""

    PENDING = "Pending"
    FAILED = "Failed"
    SUCCESS = "Success"
    TIMED_OUT = "TimedOut"
