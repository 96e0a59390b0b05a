"""An async client for the few Codat endpoints the service uses.

No official SDK fits: the Python SDKs cover Bill Pay's synchronous (v2) API only, run
synchronously on urllib3 with their own retries, and have no data-status, refresh or
push-operation calls (CODAT.md §4). So this is plain httpx, with the retry, pause and
concurrency rules the service needs in one place.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from app import tracing
from app.codat.datatypes import SINGLE_OBJECT_TYPES, list_path
from app.codat.errors import (
    CodatError,
    CodatNotFound,
    CodatNotReady,
    CodatPaused,
    CodatRequestError,
    CodatUnavailable,
)
from app.codat.gate import MAX_PAUSE, PauseGate
from app.codat.ids import id_segment, segment
from app.metrics import CODAT_CALLS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.codat.io"
MAX_PAGE_SIZE = 5000  # Codat's largest page: the fewest calls per pull
PER_COMPANY_CONCURRENCY = 10  # Codat's limit of concurrent requests per company


def codat_time(moment: datetime) -> str:
    """The form Codat's query language compares: `2024-01-02T03:04:05.678Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def retry_after_seconds(value: str | None, now: datetime) -> float:
    """`Retry-After` is seconds or an HTTP date; without one, wait a minute; never longer
    than Codat's quota window (MAX_PAUSE)."""
    if not value:
        return 60.0
    if value.strip().isdigit():
        return min(float(value.strip()), MAX_PAUSE.total_seconds())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return 60.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_PAUSE.total_seconds())


class CodatClient:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        gate: PauseGate | None = None,
        timeout: float = 30.0,
        max_concurrency: int = 32,
        retries: int = 3,
        retry_base_delay: float = 0.5,
        page_size: int = MAX_PAGE_SIZE,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        token = base64.b64encode(api_key.encode()).decode()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Basic {token}", "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency),
            transport=transport,
        )
        self._host = urlsplit(base_url).netloc
        self.gate = gate or PauseGate()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._total = asyncio.Semaphore(max_concurrency)
        self._per_company: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(PER_COMPANY_CONCURRENCY)
        )
        self._retries = retries
        self._retry_base_delay = retry_base_delay
        self.page_size = min(page_size, MAX_PAGE_SIZE)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- reads into the local copy ------------------------------------------------------

    async def pages(
        self,
        company_id: str,
        data_type: str,
        *,
        connection_id: str | None = None,
        modified_since: datetime | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of a data type's records, oldest change first, following `_links.next`."""
        path = list_path(company_id, data_type, connection_id)
        operation = f"read:{data_type}"
        if data_type in SINGLE_OBJECT_TYPES:
            yield [await self._json("GET", path, company_id, operation, data_type=data_type)]
            return
        first_page: dict[str, str | int] = {
            "page": 1,
            "pageSize": self.page_size,
            "orderBy": "modifiedDate",
        }
        if modified_since is not None:
            # >= and not >: records sharing the watermark's instant are fetched again, not lost.
            first_page["query"] = f"modifiedDate>={codat_time(modified_since)}"
        async for page in self._paged(path, company_id, operation, first_page, data_type):
            yield page

    async def _paged(
        self,
        path: str,
        company_id: str,
        operation: str,
        first_page: dict[str, str | int],
        data_type: str | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's results, from `path` with `first_page`, then along `_links.next`."""
        url: str | None = path
        params: dict[str, str | int] | None = first_page
        while url is not None:
            body = await self._json(
                "GET", url, company_id, operation, params=params, data_type=data_type
            )
            yield list(body.get("results") or [])
            url, params = self._next_link(body), None

    def _next_link(self, body: dict[str, Any]) -> str | None:
        href = ((body.get("_links") or {}).get("next") or {}).get("href")
        if not isinstance(href, str) or not href:
            return None
        parts = urlsplit(href)
        if parts.netloc and parts.netloc != self._host:
            # Never send the API key to a host named in a response.
            raise CodatRequestError(502, "next page link points to another host")
        return href if not parts.netloc else href[href.index(parts.netloc) + len(parts.netloc) :]

    # -- write outcomes -----------------------------------------------------------------

    async def push_operation(self, company_id: str, push_operation_key: str) -> dict[str, Any]:
        company = id_segment(company_id, "company id")
        path = f"/companies/{company}/push/{id_segment(push_operation_key, 'push operation key')}"
        return await self._json("GET", path, company_id, "push:get")

    def push_operations(
        self, company_id: str, *, requested_since: datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of the push operations requested since a moment, oldest first."""
        first_page: dict[str, str | int] = {
            "page": 1,
            "pageSize": self.page_size,
            "query": f"requestedOnUtc>{codat_time(requested_since)}",
            "orderBy": "requestedOnUtc",
        }
        path = f"/companies/{id_segment(company_id, 'company id')}/push"
        return self._paged(path, company_id, "push:list", first_page)

    # -- freshness ----------------------------------------------------------------------

    async def queue_refresh(
        self, company_id: str, data_type: str, connection_id: str | None
    ) -> None:
        """Ask Codat to read one data type again. Raises CodatNotReady if one is running."""
        params: dict[str, str | int] | None = (
            {"connectionId": connection_id} if connection_id else None
        )
        company = id_segment(company_id, "company id")
        await self._json(
            "POST",
            f"/companies/{company}/data/queue/{segment(data_type)}",
            company_id,
            "refresh:queue",
            params=params,
            data_type=data_type,
        )

    async def data_status(self, company_id: str) -> dict[str, Any]:
        """Codat's view of each data type: `{dataType: {lastSuccessfulSync, currentStatus}}`."""
        path = f"/companies/{id_segment(company_id, 'company id')}/dataStatus"
        return await self._json("GET", path, company_id, "status")

    async def webhook_consumers(self) -> list[dict[str, Any]]:
        body = await self._json("GET", "/webhooks", None, "webhooks:list")
        return list(body.get("results") or [])

    async def create_webhook_consumer(self, url: str, event_types: list[str]) -> dict[str, Any]:
        return await self._json(
            "POST",
            "/webhooks",
            None,
            "webhooks:create",
            json_body={"url": url, "eventTypes": event_types, "disabled": False},
        )

    # -- plumbing -----------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        url: str,
        company_id: str | None,
        operation: str,
        *,
        params: dict[str, str | int] | None = None,
        json_body: Any = None,
        data_type: str | None = None,
    ) -> dict[str, Any]:
        # A span per call (tracing on): what it was for and its last status, never the key.
        attributes = {
            "codat.operation": operation,
            "codat.company_id": company_id,
            "codat.data_type": data_type,
        }
        with tracing.span(f"codat {operation}", attributes):
            response = await self._send(method, url, company_id, operation, params, json_body)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            body = response.json()
        except ValueError as exc:
            raise CodatUnavailable(f"{operation}: answer is not JSON") from exc
        if not isinstance(body, dict):
            raise CodatUnavailable(f"{operation}: answer is not a JSON object")
        return body

    async def _send(
        self,
        method: str,
        url: str,
        company_id: str | None,
        operation: str,
        params: dict[str, str | int] | None,
        json_body: Any,
    ) -> httpx.Response:
        """One call, retried on 5xx and network faults; 429 pauses every call."""
        for attempt in range(self._retries + 1):
            self.gate.check()
            try:
                response = await self._limited(method, url, company_id, params, json_body)
            except httpx.TransportError as exc:  # time-outs, refused, reset
                CODAT_CALLS.labels(operation=operation, status="error").inc()
                tracing.annotate({"codat.status": "error"})
                failure: CodatError = CodatUnavailable(f"{operation}: {type(exc).__name__}")
            else:
                CODAT_CALLS.labels(operation=operation, status=str(response.status_code)).inc()
                tracing.annotate({"codat.status": str(response.status_code)})
                status = response.status_code
                if status < 400:
                    return response
                if status == 429:
                    wait = retry_after_seconds(response.headers.get("Retry-After"), self._clock())
                    until = self._clock() + timedelta(seconds=wait)
                    self.gate.pause(until, "429")
                    raise CodatPaused(until, "429")
                if status == 409:
                    raise CodatNotReady(f"{operation}: {_error_text(response)}")
                if status == 404:
                    raise CodatNotFound(f"{operation}: {_error_text(response)}")
                if status < 500:
                    raise CodatRequestError(status, _error_text(response))
                failure = CodatUnavailable(f"{operation}: Codat answered {status}")
            if attempt < self._retries:
                delay = self._retry_base_delay * 2**attempt
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
        raise failure

    async def _limited(
        self,
        method: str,
        url: str,
        company_id: str | None,
        params: dict[str, str | int] | None,
        json_body: Any,
    ) -> httpx.Response:
        async with self._total:
            # A 429 may have paused calls while this one waited for a slot.
            self.gate.check()
            if company_id is None:
                return await self._http.request(method, url, params=params, json=json_body)
            async with self._per_company[company_id]:
                return await self._http.request(method, url, params=params, json=json_body)


def _error_text(response: httpx.Response) -> str:
    """Codat's `ErrorMessage.error`, or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:500]
    return response.text[:200]
