"""The pause on calls to Codat, checked before every call the client makes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from app.codat.errors import CodatPaused

# Codat's quota is daily and resets at 00:00 UTC (CODAT.md §3.4): no genuine pause lasts
# longer. A rate-limit event dated 9999 (or a Retry-After as long) paused every call to
# Codat for good; now it pauses for a day at most, and an operator can lift it sooner.
MAX_PAUSE = timedelta(hours=24)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def capped_pause(until: datetime, now: datetime) -> datetime:
    """The end of a pause, no later than Codat's quota window from now."""
    return min(until, now + MAX_PAUSE)


class PauseGate:
    """In-process view of the pause; the worker keeps it in step with the database."""

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self.paused_until: datetime | None = None
        self.reason: str | None = None

    def pause(self, until: datetime, reason: str) -> None:
        if self.paused_until is None or until > self.paused_until:
            self.paused_until, self.reason = until, reason

    def set(self, until: datetime | None, reason: str | None) -> None:
        self.paused_until, self.reason = until, reason

    @property
    def paused(self) -> bool:
        return self.paused_until is not None and self._clock() < self.paused_until

    def check(self) -> None:
        if self.paused and self.paused_until is not None:
            raise CodatPaused(self.paused_until, self.reason or "paused")
