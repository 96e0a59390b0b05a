"""What can go wrong calling Codat, sorted by what the caller should do about it."""

from __future__ import annotations

from datetime import datetime


class CodatError(Exception):
    """Base: a call did not give an answer the caller can use."""


class CodatPaused(CodatError):
    """Calls are paused (rate limit reached, or a 429): wait until `until`, do not fail."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(f"calls to Codat paused until {until.isoformat()} ({reason})")
        self.until = until
        self.reason = reason


class CodatNotReady(CodatError):
    """409: the data set is not synced yet, or a sync is in progress. Try later."""


class CodatNotFound(CodatError):
    """404: no such company, data type or operation."""


class CodatPagingError(CodatError):
    """Codat's next page link would not lead on (same page again, another company or
    data type): the walk stops after the pages already read."""


class CodatUnavailable(CodatError):
    """5xx, time-outs and lost connections that outlasted the client's own retries."""


class CodatRequestError(CodatError):
    """Any other 4xx: Codat refused the request as made."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"Codat answered {status_code}: {message}")
        self.status_code = status_code


class NotACodatId(CodatRequestError):
    """An id Codat cannot have made (not a UUID): refused before any call, as Codat would."""

    def __init__(self, what: str) -> None:
        CodatError.__init__(self, f"{what} is not a Codat id (a UUID): no call made")
        self.status_code = 400
