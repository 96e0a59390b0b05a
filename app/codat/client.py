"""An async client for the few Codat endpoints the service uses.

Why not Codat's SDKs (CODAT.md §4; README, "Why httpx"): `codat-platform` 6.x does cover
data status, refresh and push operations, and `codat-sync-for-payables-version-1` 3.2.1
the v1 cache reads, but the first runs synchronously on urllib3 with retries of its own
(on by default, up to an hour), and the second pins httpx below 0.28 and pydantic below
2.10 (this service runs both newer) and drops the 429's headers, which the pause needs.
`codat-sync-for-payables` 10.x is Bill Pay's synchronous (v2) API only. So this is plain
httpx, with the retry, pause, paging and concurrency rules the service needs in one place,
and guards for what Codat does not document (each marked as a guess where it is one).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from app import tracing
from app.codat.base import BASE_URL
from app.codat.datatypes import SINGLE_OBJECT_TYPES, list_path
from app.codat.errors import (
    CodatError,
    CodatNotFound,
    CodatNotReady,
    CodatPagingError,
    CodatPaused,
    CodatRequestError,
    CodatUnavailable,
)
from app.codat.events import parse_datetime
from app.codat.gate import MAX_PAUSE, PauseGate
from app.codat.ids import id_segment, segment
from app.codat.records import CachedRecord, DataStatus, PushOperation, WebhookConsumer
from app.metrics import CODAT_CALLS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = BASE_URL
MAX_PAGE_SIZE = 5000  # Codat's largest page: the fewest calls per pull
PER_COMPANY_CONCURRENCY = 10  # Codat's limit of concurrent requests per company
# Codat documents only the message of a refresh refused because one is running
# ("DatasetAlreadyInProgressException: Cannot queue bills sync ... still in progress"),
# not its status: these words, under a 400 or a 409, mean "already on its way" (a guess).
ALREADY_SYNCING = re.compile(
    r"AlreadyInProgress|already (in progress|queued|syncing|running)|still (in progress|syncing)",
    re.IGNORECASE,
)


def authorization(api_key: str) -> str:
    """`Basic <base64(key)>`; a key given already encoded (the Portal shows it so, as
    `Basic ...`) is used as it is, not encoded twice."""
    key = api_key.strip()
    if key[:6].lower() == "basic ":
        return "Basic " + key[6:].strip()
    return "Basic " + base64.b64encode(key.encode()).decode()


@dataclass(frozen=True)
class QuotaReading:
    """What Codat's `X-Rate-Limit-*` headers said last (CODAT.md §3.4), and when."""

    limit: int | None
    remaining: int | None
    reset_at: datetime | None
    read_at: datetime


def _header_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _header_time(value: str | None) -> datetime | None:
    """`X-Rate-Limit-Reset` is "a date" (Codat says no more): ISO 8601, an HTTP date, or
    Unix seconds, whichever parses (a guess)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        try:
            return datetime.fromtimestamp(int(text), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    parsed = parse_datetime(text)
    if parsed is not None:
        return parsed
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": authorization(api_key), "Accept": "application/json"},
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
        # The last X-Rate-Limit-* headers seen; the worker stores them (the client knows
        # no tables).
        self.quota: QuotaReading | None = None

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
    ) -> AsyncIterator[list[CachedRecord]]:
        """Each page of a data type's records, oldest change first, following `_links.next`."""
        path = list_path(company_id, data_type, connection_id)
        operation = f"read:{data_type}"
        if data_type in SINGLE_OBJECT_TYPES:
            body = await self._json("GET", path, company_id, operation, data_type=data_type)
            yield [CachedRecord.of(body)]
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
            yield [CachedRecord.of(record) for record in page if isinstance(record, dict)]

    async def _paged(
        self,
        path: str,
        company_id: str,
        operation: str,
        first_page: dict[str, str | int],
        data_type: str | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's results, from `path` with `first_page`, then along `_links.next`.

        Codat's links are followed only while they lead on: a link that does not advance
        (the same page again), that leaves `path` (another company or data type), or that
        asks for more pages than `totalResults` implies ends the walk. The first two raise
        CodatPagingError after the pages already yielded; the last just stops. (Codat's own
        OpenAPI examples repeat links and name other companies: a mock built from them
        looped 600 times in 20 s.)"""
        url: str | None = path
        params: dict[str, str | int] | None = first_page
        page_number = 0
        pages = 0
        most_pages: int | None = None
        read_pages: set[int] = {int(first_page.get("page", 1))}
        read_links: set[str] = set()
        while url is not None:
            body = await self._json(
                "GET", url, company_id, operation, params=params, data_type=data_type
            )
            results = list(body.get("results") or [])
            page_number = _int(body.get("pageNumber")) or page_number + 1
            most_pages = _most_pages(body, most_pages)
            links = {"_links": body.get("_links")}
            # Held by the caller only: once it lets go, the page is freed before the next
            # one is fetched (5,000 records parsed are ~15 MB; 16 pulls at once).
            del body
            yield results
            del results
            pages += 1
            url, params = self._next_link(links), None
            if url is None:
                return
            if most_pages is not None and pages >= most_pages:
                log.warning(
                    "next page link past totalResults: not followed",
                    extra={"operation": operation, "company_id": company_id, "pages": pages},
                )
                return
            _check_next(url, path, page_number, read_pages, read_links)

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

    async def push_operation(self, company_id: str, push_operation_key: str) -> PushOperation:
        company = id_segment(company_id, "company id")
        path = f"/companies/{company}/push/{id_segment(push_operation_key, 'push operation key')}"
        operation = PushOperation.of(await self._json("GET", path, company_id, "push:get"))
        if operation is None:
            raise CodatUnavailable("push:get: the answer is not a push operation")
        return operation

    async def push_operations(
        self, company_id: str, *, requested_since: datetime
    ) -> AsyncIterator[list[PushOperation]]:
        """Pages of the push operations requested since a moment.

        Codat does not document queries on push operations (its queries are for company
        data, not metadata). If it refuses `requestedOnUtc>...` with a 400, the list is
        read without the query, newest first, stopping at the moment; if it refuses the
        order too, every page is read and filtered here (both fallbacks are guesses)."""
        path = f"/companies/{id_segment(company_id, 'company id')}/push"
        since = codat_time(requested_since)
        attempts: list[dict[str, str | int]] = [
            {"query": f"requestedOnUtc>{since}", "orderBy": "requestedOnUtc"},
            {"orderBy": "-requestedOnUtc"},
            {},
        ]
        for attempt, extra in enumerate(attempts):
            first_page: dict[str, str | int] = {"page": 1, "pageSize": self.page_size, **extra}
            yielded = False
            try:
                async for page in self._paged(path, company_id, "push:list", first_page):
                    yielded = True
                    operations = [
                        op
                        for item in page
                        if isinstance(item, dict) and (op := PushOperation.of(item)) is not None
                    ]
                    recent = [op for op in operations if _requested_after(op, requested_since)]
                    if recent:
                        yield recent
                    newest_first = str(extra.get("orderBy", "")).startswith("-")
                    if newest_first and len(recent) < len(operations):
                        return  # the rest is older than the look-back
                return
            except CodatRequestError as exc:
                if exc.status_code != 400 or yielded or attempt == len(attempts) - 1:
                    raise
                log.warning(
                    "Codat refused the push operation list as asked; asking more simply",
                    extra={"company_id": company_id, "refused": sorted(extra), "error": str(exc)},
                )

    # -- freshness ----------------------------------------------------------------------

    async def queue_refresh(
        self, company_id: str, data_type: str, connection_id: str | None
    ) -> bool:
        """Ask Codat to read one data type again. False when Codat says one is already
        queued or running: that is as good as done (a 400 or a 409 with those words;
        Codat's OpenAPI lists neither for this call, so the status is not relied on)."""
        params: dict[str, str | int] | None = (
            {"connectionId": connection_id} if connection_id else None
        )
        company = id_segment(company_id, "company id")
        try:
            await self._json(
                "POST",
                f"/companies/{company}/data/queue/{segment(data_type)}",
                company_id,
                "refresh:queue",
                params=params,
                data_type=data_type,
            )
        except CodatNotReady:
            return False  # 409: the data set is being synced
        except CodatRequestError as exc:
            if exc.status_code == 400 and ALREADY_SYNCING.search(str(exc)):
                return False
            raise
        return True

    async def data_status(self, company_id: str) -> dict[str, DataStatus]:
        """Codat's view of each data type: when it last read it, what it is doing."""
        path = f"/companies/{id_segment(company_id, 'company id')}/dataStatus"
        return DataStatus.all_of(await self._json("GET", path, company_id, "status"))

    async def webhook_consumers(self) -> list[WebhookConsumer]:
        body = await self._json("GET", "/webhooks", None, "webhooks:list")
        return [WebhookConsumer.of(c) for c in body.get("results") or [] if isinstance(c, dict)]

    async def create_webhook_consumer(self, url: str, event_types: list[str]) -> WebhookConsumer:
        body = await self._json(
            "POST",
            "/webhooks",
            None,
            "webhooks:create",
            json_body={"url": url, "eventTypes": event_types, "disabled": False},
        )
        return WebhookConsumer.of(body)

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
                self._read_quota(response)
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

    def _read_quota(self, response: httpx.Response) -> None:
        """Keep Codat's own count of the day's quota, where it sends one."""
        headers = response.headers
        remaining = _header_int(headers.get("X-Rate-Limit-Remaining"))
        if remaining is None:
            return
        self.quota = QuotaReading(
            limit=_header_int(headers.get("X-Rate-Limit-Limit")),
            remaining=remaining,
            reset_at=_header_time(headers.get("X-Rate-Limit-Reset")),
            read_at=self._clock(),
        )

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


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _most_pages(body: dict[str, Any], known: int | None) -> int | None:
    """How many pages `totalResults` implies (the largest it said: records added while
    paging move the end, never the start)."""
    total, size = _int(body.get("totalResults")), _int(body.get("pageSize"))
    if total is None or not size:
        return known
    pages = max(1, math.ceil(total / size))
    return pages if known is None else max(known, pages)


def _check_next(
    url: str, path: str, page_number: int, read_pages: set[int], read_links: set[str]
) -> None:
    """A next link must stay on `path` and ask for a page not yet read (noted as read)."""
    parts = urlsplit(url)
    if unquote(parts.path).rstrip("/") != unquote(path).rstrip("/"):
        raise CodatPagingError(
            f"next page link leaves {path}: it points at another company or data type"
        )
    asked = parse_qs(parts.query).get("page", [""])[0]
    if not asked:
        if url in read_links:
            raise CodatPagingError("next page link repeats one already followed")
        read_links.add(url)
        return
    if not asked.isdigit() or int(asked) <= page_number or int(asked) in read_pages:
        raise CodatPagingError(f"next page link does not advance past page {page_number}")
    read_pages.add(int(asked))


def _requested_after(operation: PushOperation, since: datetime) -> bool:
    """Whether a push operation was requested after `since` (one without a readable date
    is kept: better looked at than missed)."""
    return operation.requested_at is None or operation.requested_at > since
