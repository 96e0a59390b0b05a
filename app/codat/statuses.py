"""Codat's read (dataset) statuses, sorted by what the service does about each.

Codat's enum is `PullOperation.status` in Codat-Platform.json; `read.completed` carries
the same words per data type. The two sets that matter are named here and nowhere else:
a *terminal* status is one a refresh cannot fix (the SMB or Codat must act first), a
*transient* one may go away if Codat reads again.
"""

from __future__ import annotations

from typing import Literal

COMPLETE = "Complete"

# A read still on its way: wait for it rather than ask again.
IN_PROGRESS = frozenset(
    {
        "Initial",
        "Queued",
        "Fetching",
        "MapQueued",
        "Mapping",
        "ProcessingQueued",
        "Processing",
        "ValidationQueued",
        "Validating",
    }
)

# A refresh cannot fix these: the accounting software does not offer the type, the
# connection's authorisation is gone or lacks a permission, or something else must be
# set up first. Recorded with Codat's issues and shown; never refreshed.
TERMINAL = frozenset({"NotSupported", "AuthError", "PermissionsError", "PrerequisiteNotMet"})

# These may pass: refreshed a few times with doubling gaps (REFRESH_MAX_RETRIES).
# ValidationError and Cancelled are here by our guess: Codat says nothing of whether a
# second read can clear them, and a few refreshes cost little.
TRANSIENT = frozenset(
    {
        "FetchError",
        "MapError",
        "InternalError",
        "ProcessingError",
        "RateLimitError",
        "ValidationError",
        "Cancelled",
    }
)

# The status that means the SMB must link the connection again.
NEEDS_RELINK = frozenset({"AuthError"})

StatusKind = Literal["complete", "in_progress", "terminal", "transient"]


def status_kind(status: object) -> StatusKind:
    """What a read's status asks of the service. A word Codat has not documented (or
    none) is taken as transient: a guess that costs a few refreshes at most."""
    if status == COMPLETE:
        return "complete"
    if status in IN_PROGRESS:
        return "in_progress"
    if status in TERMINAL:
        return "terminal"
    return "transient"
