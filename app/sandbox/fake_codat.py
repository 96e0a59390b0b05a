"""An in-memory fake of Codat's REST API, served over real HTTP: the tests' Codat, and
the local sandbox `codat-webhooks sandbox` serves when there is no Codat account.

Why: no machine here reaches Codat, yet the service's Codat client must be
exercised end to end: paging through ``_links.next``, incremental
``modifiedDate>`` pulls, deletions reported as ``metadata.isDeleted``, 409 for a
data type that has not synced, refresh queuing, push-operation look-ups, 429
with ``Retry-After``, 5xx and slow answers. Shapes follow the OpenAPI specs in
``shared/codat-oas`` (Codat-Platform.json and Codat-Sync-Payables-v1.json);
``tests/test_fake_codat.py`` validates the answers against them.

Tests mutate the state through plain methods while the server thread serves;
one lock guards it. ``FakeCodat.app`` is a plain ASGI app, so it also works
in-process through ``httpx.ASGITransport``; ``run_fake_codat`` serves it with
uvicorn on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BILL_PAY_DATA_TYPES",
    "DATASET_STATUSES",
    "DATA_TYPES",
    "LIST_PATHS",
    "RECORD_DATA_TYPES",
    "CodatError",
    "FakeCall",
    "FakeCodat",
    "QueryError",
    "error_body",
    "iso",
    "make_account",
    "make_bank_account",
    "make_bill",
    "make_bill_credit_note",
    "make_bill_payment",
    "make_company_info",
    "make_payment_method",
    "make_supplier",
    "make_tax_rate",
    "make_tracking_category",
    "parse_datetime",
    "parse_query",
    "run_fake_codat",
]

Record = dict[str, Any]

#: URL segment under ``/companies/{companyId}/data/`` -> Codat dataType key.
LIST_PATHS: dict[str, str] = {
    "bills": "bills",
    "suppliers": "suppliers",
    "billPayments": "billPayments",
    "billCreditNotes": "billCreditNotes",
    "paymentMethods": "paymentMethods",
    "taxRates": "taxRates",
    "trackingCategories": "trackingCategories",
    "accounts": "chartOfAccounts",
}
_PATH_OF = {data_type: segment for segment, data_type in LIST_PATHS.items()}

#: Data types whose records the fake stores (bankAccounts is connection-scoped).
RECORD_DATA_TYPES = frozenset(LIST_PATHS.values()) | {"bankAccounts"}

#: The Bill Pay data types, with ``company`` served from ``/data/info``.
BILL_PAY_DATA_TYPES = (*sorted(RECORD_DATA_TYPES), "company")

#: ``DataStatus.dataType`` enum (Codat-Platform.json components.schemas.DataStatus).
DATA_TYPES = (
    "accountTransactions", "balanceSheet", "bankAccounts", "bankTransactions",
    "billCreditNotes", "billPayments", "bills", "cashFlowStatement", "chartOfAccounts",
    "company", "creditNotes", "customers", "directCosts", "directIncomes", "invoices",
    "itemReceipts", "items", "journalEntries", "journals", "paymentMethods", "payments",
    "profitAndLoss", "purchaseOrders", "salesOrders", "suppliers", "taxRates",
    "trackingCategories", "transfers", "banking-accountBalances", "banking-accounts",
    "banking-transactionCategories", "banking-transactions", "commerce-companyInfo",
    "commerce-customers", "commerce-disputes", "commerce-locations", "commerce-orders",
    "commerce-paymentMethods", "commerce-payments", "commerce-productCategories",
    "commerce-products", "commerce-taxComponents", "commerce-transactions",
)  # fmt: skip

#: ``PullOperation.status`` enum (the dataset status).
DATASET_STATUSES = (
    "Initial", "Queued", "Fetching", "MapQueued", "Mapping", "Complete", "FetchError",
    "MapError", "InternalError", "ProcessingQueued", "Processing", "ProcessingError",
    "ValidationQueued", "Validating", "ValidationError", "AuthError", "Cancelled",
    "NotSupported", "RateLimitError", "PermissionsError", "PrerequisiteNotMet",
)  # fmt: skip

_PUSH_STATUS_CODES = {"Pending": 202, "Success": 200, "Failed": 400, "TimedOut": 504}
_PUSH_FIELDS = frozenset(
    {
        "changes", "dataType", "companyId", "pushOperationKey", "dataConnectionKey",
        "requestedOnUtc", "completedOnUtc", "timeoutInMinutes", "timeoutInSeconds",
        "status", "errorMessage", "validation", "statusCode",
    }
)  # fmt: skip
_PULL_FIELDS = frozenset(
    {
        "id", "companyId", "connectionId", "dataType", "status", "statusDescription",
        "errorMessage", "requested", "completed", "progress", "isCompleted", "isErrored",
    }
)  # fmt: skip
_COMMON_RECORD_FIELDS = frozenset({"id", "modifiedDate", "sourceModifiedDate", "metadata"})

#: Texts from the spec examples (components.responses) for each status.
_ERROR_TEXTS = {
    400: "Error processing request - not valid.",
    401: "Unauthorized",
    402: "You have exceeded the 50-company limit that applies to a Free plan.",
    403: "You are using an outdated API key or a key not associated with that resource.",
    404: "One or more of the resources you referenced could not be found.",
    409: "The data set has not been requested.",
    429: "You have made too many requests in a given amount of time; please retry later.",
    500: "There is a problem with our server. Please try again later.",
    503: "The Codat API is temporarily offline for maintenance. Please try again later.",
}

MAX_PAGE_SIZE = 5000
MAX_QUERY_LENGTH = 2048

NextLinkFault = Literal["repeat", "other_company", "other_data_type", "endless"]
_OTHER_COMPANY = "0498e921-0000-4000-8000-000000000000"
_MOVED_PATH: dict[str, Callable[[str], str]] = {
    "other_company": lambda path: re.sub(
        r"^/companies/[^/]+", f"/companies/{_OTHER_COMPANY}", path
    ),
    "other_data_type": lambda path: path.rsplit("/", 1)[0] + "/suppliers",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Codat's UTC timestamp form: ``2024-05-01T10:00:00Z`` (milliseconds when present)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    spec: Literal["seconds", "milliseconds"] = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_datetime(text: str) -> datetime | None:
    """A Codat date or date-time string as an aware UTC datetime, else None.

    Naive values (Codat sends local times without offset) are taken as UTC.
    """
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def error_body(status: int, error: str | None = None, *, service: str = "PublicApi") -> Record:
    """A Codat ``ErrorMessage`` body."""
    return {
        "statusCode": status,
        "service": service,
        "error": error or _ERROR_TEXTS.get(status, "An error occurred."),
        "correlationId": uuid.uuid4().hex,
        "canBeRetried": "Unknown",
        "detailedErrorCode": 0,
    }


class CodatError(Exception):
    """Raised inside a handler to answer with an ``ErrorMessage``."""

    def __init__(
        self,
        status: int,
        error: str | None = None,
        *,
        service: str = "PublicApi",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error or _ERROR_TEXTS.get(status, ""))
        self.status = status
        self.error = error
        self.service = service
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The JSON response Codat would give."""
        body = error_body(self.status, self.error, service=self.service)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class FakeCall:
    """One request the fake received (``status`` is 0 until the answer starts)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    time: datetime
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    path_substring: str
    status: int
    remaining: int
    retry_after: int | None
    delay: float


@dataclass
class _Company:
    id: str
    connections: list[str]
    info: Record
    records: dict[str, dict[str, Record]] = field(default_factory=dict)
    record_connection: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, Record] = field(default_factory=dict)
    pulls: dict[str, Record] = field(default_factory=dict)
    in_progress: dict[str, str] = field(default_factory=dict)
    push_operations: dict[str, Record] = field(default_factory=dict)


# --------------------------------------------------------------------------- query language


class QueryError(ValueError):
    """A ``query`` or ``orderBy`` Codat would refuse (answered with 400)."""


@dataclass(frozen=True)
class _Clause:
    field: tuple[str, ...]
    op: str
    value: str


@dataclass(frozen=True)
class _Group:
    kind: Literal["&&", "||"]
    items: tuple[_Node, ...]


_Node = _Clause | _Group
_CLAUSE = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*"
    r"(?P<op>!=|>=|<=|=|>|<|~)"
)


class _QueryParser:
    """Codat's query language: ``field op value`` joined by ``&&`` or ``||``, ``{}`` groups.

    Mixing ``&&`` and ``||`` without braces is refused: Codat's docs say to group
    with ``{ }`` and state no precedence.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> _Node:
        node = self._expression()
        self._skip_space()
        if self.pos != len(self.text):
            raise QueryError(f"Error parsing query - Malformed query at {self.text[self.pos :]!r}")
        return node

    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _expression(self) -> _Node:
        items = [self._term()]
        joiner: str | None = None
        while True:
            self._skip_space()
            token = self.text[self.pos : self.pos + 2]
            if token not in ("&&", "||"):
                break
            if joiner is not None and token != joiner:
                raise QueryError("Error parsing query - use { } to combine && and ||")
            joiner = token
            self.pos += 2
            items.append(self._term())
        if joiner is None:
            return items[0]
        return _Group("&&" if joiner == "&&" else "||", tuple(items))

    def _term(self) -> _Node:
        self._skip_space()
        if self.text.startswith("{", self.pos):
            self.pos += 1
            node = self._expression()
            self._skip_space()
            if not self.text.startswith("}", self.pos):
                raise QueryError("Error parsing query - Malformed query (missing })")
            self.pos += 1
            return node
        match = _CLAUSE.match(self.text, self.pos)
        if match is None:
            raise QueryError("Error parsing query - Malformed query.")
        self.pos = match.end()
        ends = [self.text.find(stop, self.pos) for stop in ("&&", "||", "}")]
        end = min([e for e in ends if e >= 0], default=len(self.text))
        value = self.text[self.pos : end].strip()
        if not value:
            raise QueryError("Error parsing query - Malformed query (missing value).")
        self.pos = end
        return _Clause(tuple(match["field"].split(".")), match["op"], value)


def parse_query(text: str) -> _Node:
    """Parse a Codat ``query`` parameter, raising ``QueryError`` when malformed."""
    if len(text) >= MAX_QUERY_LENGTH:
        raise QueryError("Error parsing query - the query must be under 2048 characters.")
    return _QueryParser(text).parse()


def _fields(node: _Node) -> Iterator[tuple[str, ...]]:
    if isinstance(node, _Clause):
        yield node.field
    else:
        for item in node.items:
            yield from _fields(item)


def _lookup(record: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """Resolve a dotted field (case-insensitive fallback); arrays cannot be queried."""
    current: Any = record
    for part in path:
        if isinstance(current, list):
            raise QueryError(f"Error parsing query - cannot query inside arrays ({'.'.join(path)})")
        if not isinstance(current, Mapping):
            return False, None
        if part in current:
            current = current[part]
            continue
        folded = {key.lower(): key for key in current}
        if part.lower() not in folded:
            return False, None
        current = current[folded[part.lower()]]
    return True, current


def _compare(left: Any, right: Any, op: str) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == ">":
        return bool(left > right)
    if op == "<":
        return bool(left < right)
    if op == ">=":
        return bool(left >= right)
    return bool(left <= right)


def _matches(node: _Node, record: Mapping[str, Any]) -> bool:
    if isinstance(node, _Group):
        results = (_matches(item, record) for item in node.items)
        return all(results) if node.kind == "&&" else any(results)
    found, actual = _lookup(record, node.field)
    name, op, raw = ".".join(node.field), node.op, node.value
    if not found or actual is None:
        return op == "!="  # Codat cannot query on nulls; a missing value is never equal
    if isinstance(actual, bool):
        if op not in ("=", "!=") or raw.lower() not in ("true", "false"):
            raise QueryError(f"Error parsing query - invalid boolean comparison on {name}")
        return _compare(actual, raw.lower() == "true", op)
    if isinstance(actual, int | float):
        if op == "~":
            raise QueryError(f"Error parsing query - ~ is not supported for number {name}")
        try:
            return _compare(float(actual), float(raw), op)
        except ValueError:
            raise QueryError(f"Error parsing query - {raw!r} is not a number") from None
    if isinstance(actual, str):
        if op == "~":
            return raw.lower() in actual.lower()
        left, right = parse_datetime(actual), parse_datetime(raw)
        if left is not None and right is not None:
            return _compare(left, right, op)
        if left is not None and op not in ("=", "!="):
            raise QueryError(f"Error parsing query - {raw!r} is not a date for {name}")
        if op in ("=", "!="):
            return _compare(actual.lower(), raw.lower(), op)
        raise QueryError(f"Error parsing query - {op} is not supported for text field {name}")
    raise QueryError(f"Error parsing query - cannot query on {name}")


def _sort_value(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return 0, int(value)
    if isinstance(value, int | float):
        return 1, float(value)
    if isinstance(value, str):
        moment = parse_datetime(value)
        return (2, moment) if moment is not None else (3, value.lower())
    return 4, json.dumps(value, sort_keys=True)


def _order(items: list[Record], order_by: str | None) -> list[Record]:
    """Sort by ``orderBy`` (``-`` for descending), nulls last, stable on the default order."""
    if not order_by:
        return items
    descending = order_by.startswith("-")
    path = tuple(order_by.lstrip("-").split("."))
    present: list[tuple[tuple[int, Any], Record]] = []
    missing: list[Record] = []
    for item in items:
        found, value = _lookup(item, path)
        if found and value is not None:
            present.append((_sort_value(value), item))
        else:
            missing.append(item)
    try:
        present.sort(key=lambda pair: pair[0], reverse=descending)
    except TypeError:
        raise QueryError(f"Error parsing query - cannot order by {order_by}") from None
    return [item for _, item in present] + missing


def _default_key(date_field: str, id_field: str) -> Callable[[Record], tuple[datetime, str]]:
    floor = datetime.min.replace(tzinfo=UTC)

    def key(item: Record) -> tuple[datetime, str]:
        raw = item.get(date_field)
        moment = parse_datetime(raw) if isinstance(raw, str) else None
        return moment or floor, str(item.get(id_field, ""))

    return key


_by_modified = _default_key("modifiedDate", "id")


# --------------------------------------------------------------------------- the fake


class FakeCodat:
    """State of a fake Codat tenant plus the ASGI app (``app``) that serves it.

    Records only become readable once their data type has synced
    (``complete_sync``/``set_data_status``/``finish_pull``); before that the list
    endpoints answer 409 as Codat does.

    Plain attributes tests may set: ``api_key`` (when set, every request needs
    ``Authorization: Basic <base64(api_key)>``), ``now`` (the clock, aware UTC),
    ``delay_all`` (seconds every answer waits), ``daily_quota`` (reported in the
    ``X-Rate-Limit-*`` headers) and ``already_in_progress_status`` (the status of a
    DatasetAlreadyInProgressException, which Codat does not document; 409, or 400).

    Behaviours Codat does not document, for the guards against them:
    ``refuse_push_query`` answers 400 to a push operation list with a ``query``;
    ``next_link_fault`` breaks every list's ``_links.next`` as a mock built from Codat's
    own OpenAPI examples does: ``"repeat"`` (the page itself again), ``"other_company"``
    or ``"other_data_type"`` (another path), ``"endless"`` (always one more page).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        now: Callable[[], datetime] | None = None,
        daily_quota: int = 12000,
    ) -> None:
        self._initial = (api_key, now or _utcnow, daily_quota)
        self._lock = threading.RLock()
        self.api_key: str | None = None
        self.now: Callable[[], datetime] = _utcnow
        self.delay_all = 0.0
        self.already_in_progress_status = 409
        self.refuse_push_query = False
        self.next_link_fault: NextLinkFault | None = None
        self.daily_quota = daily_quota
        self._companies: dict[str, _Company] = {}
        self._faults: list[_Fault] = []
        self._calls: list[FakeCall] = []
        self._consumers: dict[str, Record] = {}
        self._requests_by_day: dict[str, int] = {}
        self.reset()
        self._router = self._build_router()
        #: The ASGI 3 app to serve (uvicorn, or httpx.ASGITransport in-process).
        self.app: ASGIApp = _App(self)

    def reset(self) -> None:
        """Back to the state just after construction, so one server can serve many tests."""
        with self._lock:
            api_key, now, daily_quota = self._initial
            self.api_key = api_key
            self.now = now
            self.delay_all = 0.0
            self.already_in_progress_status = 409
            self.refuse_push_query = False
            self.next_link_fault = None
            self.daily_quota = daily_quota
            self._companies.clear()
            self._faults.clear()
            self._calls.clear()
            self._consumers.clear()
            self._requests_by_day.clear()

    # ----------------------------------------------------------------- state: companies

    def add_company(self, company_id: str, connection_id: str, *, name: str | None = None) -> None:
        """Create a company with a connection (call again to add another connection)."""
        with self._lock:
            company = self._companies.get(company_id)
            if company is None:
                info = make_company_info(name or f"Company {company_id[:8]}")
                self._companies[company_id] = _Company(company_id, [connection_id], info)
            elif connection_id not in company.connections:
                company.connections.append(connection_id)

    def delete_company(self, company_id: str) -> None:
        """Codat deletes the company: every call about it answers 404 from now on."""
        with self._lock:
            self._companies.pop(company_id, None)

    def _company(self, company_id: str) -> _Company:
        try:
            return self._companies[company_id]
        except KeyError:
            raise KeyError(f"unknown company {company_id!r}: call add_company first") from None

    # ----------------------------------------------------------------- state: records

    def put_record(
        self,
        company_id: str,
        data_type: str,
        record: Mapping[str, Any],
        *,
        modified: datetime | None = None,
        connection_id: str | None = None,
    ) -> Record:
        """Upsert a record by ``record["id"]``, stamping ``modifiedDate`` (``modified`` or now).

        ``metadata.isDeleted`` defaults to false. ``connection_id`` only matters for
        bankAccounts (default: the company's first connection). Returns the stored copy.
        """
        _check_record_type(data_type)
        record_id = record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise ValueError("a record needs a non-empty string 'id'")
        stored = copy.deepcopy(dict(record))
        stored["modifiedDate"] = iso(modified or self.now())
        if not isinstance(stored.get("metadata"), dict):
            stored["metadata"] = {"isDeleted": False}
        with self._lock:
            company = self._company(company_id)
            if data_type == "bankAccounts":
                connection = connection_id or company.connections[0]
                if connection not in company.connections:
                    raise KeyError(f"unknown connection {connection!r} of {company_id!r}")
                company.record_connection[record_id] = connection
            company.records.setdefault(data_type, {})[record_id] = stored
            return copy.deepcopy(stored)

    def delete_record(
        self,
        company_id: str,
        data_type: str,
        record_id: str,
        *,
        modified: datetime | None = None,
    ) -> Record:
        """Mark a record deleted the way Codat's cache does: ``metadata.isDeleted`` true."""
        _check_record_type(data_type)
        stamp = iso(modified or self.now())
        with self._lock:
            stored = self._company(company_id).records.get(data_type, {}).get(record_id)
            if stored is None:
                raise KeyError(f"no {data_type} record {record_id!r} in {company_id!r}")
            metadata = stored.get("metadata")
            stored["metadata"] = {
                **(metadata if isinstance(metadata, dict) else {}),
                "isDeleted": True,
            }
            stored["modifiedDate"] = stamp
            return copy.deepcopy(stored)

    def records(self, company_id: str, data_type: str) -> list[Record]:
        """Every stored record, deleted ones included, in the default (modifiedDate, id) order."""
        _check_record_type(data_type)
        with self._lock:
            stored = list(self._company(company_id).records.get(data_type, {}).values())
            return copy.deepcopy(sorted(stored, key=_by_modified))

    # ----------------------------------------------------------------- state: data status, pulls

    def set_data_status(
        self,
        company_id: str,
        data_type: str,
        *,
        last_successful_sync: datetime,
        current_status: str = "Complete",
    ) -> Record:
        """Set one entry of ``/dataStatus`` (new sync ids each time)."""
        _check_data_type(data_type)
        if current_status not in DATASET_STATUSES:
            raise ValueError(f"{current_status!r} is not a dataset status: {DATASET_STATUSES}")
        sync_id = str(uuid.uuid4())
        with self._lock:
            company = self._company(company_id)
            previous = company.statuses.get(data_type, {})
            if current_status == "Complete":
                successful = sync_id
            else:
                successful = previous.get("latestSuccessfulSyncId") or str(uuid.uuid4())
            status = {
                "dataType": data_type,
                "lastSuccessfulSync": iso(last_successful_sync),
                "currentStatus": current_status,
                "latestSyncId": sync_id,
                "latestSuccessfulSyncId": successful,
            }
            company.statuses[data_type] = status
            return copy.deepcopy(status)

    def complete_sync(self, company_id: str, data_type: str) -> Record:
        """A successful sync just finished: lastSuccessfulSync = now, a new sync id.

        A pull of that data type still in progress is completed with it (its id
        becomes the sync id).
        """
        _check_data_type(data_type)
        moment = self.now()
        with self._lock:
            company = self._company(company_id)
            pull_id = company.in_progress.pop(data_type, None)
            sync_id = pull_id or str(uuid.uuid4())
            if pull_id is not None:
                company.pulls[pull_id].update(
                    status="Complete",
                    completed=iso(moment),
                    progress=100,
                    isCompleted=True,
                    isErrored=False,
                )
            status = {
                "dataType": data_type,
                "lastSuccessfulSync": iso(moment),
                "currentStatus": "Complete",
                "latestSyncId": sync_id,
                "latestSuccessfulSyncId": sync_id,
            }
            company.statuses[data_type] = status
            return copy.deepcopy(status)

    def finish_pull(self, company_id: str, data_type: str) -> Record:
        """Complete the pull queued through ``/data/queue/{dataType}``; returns the data status."""
        with self._lock:
            if data_type not in self._company(company_id).in_progress:
                raise KeyError(f"no {data_type} pull in progress for {company_id!r}")
            return self.complete_sync(company_id, data_type)

    def fail_pull(
        self,
        company_id: str,
        data_type: str,
        *,
        status: str = "FetchError",
        error_message: str = "The data could not be fetched from the accounting software.",
    ) -> Record:
        """End the queued pull in an error state (lastSuccessfulSync is kept); returns the pull."""
        if status not in DATASET_STATUSES or status == "Complete":
            raise ValueError(f"{status!r} is not an error status")
        with self._lock:
            company = self._company(company_id)
            pull_id = company.in_progress.pop(data_type, None)
            if pull_id is None:
                raise KeyError(f"no {data_type} pull in progress for {company_id!r}")
            pull = company.pulls[pull_id]
            pull.update(status=status, errorMessage=error_message, isErrored=True, progress=100)
            entry = company.statuses.setdefault(data_type, {"dataType": data_type})
            entry.update(currentStatus=status, latestSyncId=pull_id)
            return copy.deepcopy(pull)

    @property
    def queued_pulls(self) -> dict[tuple[str, str], Record]:
        """Pulls in progress, keyed by (company id, data type)."""
        with self._lock:
            return {
                (company.id, data_type): copy.deepcopy(company.pulls[pull_id])
                for company in self._companies.values()
                for data_type, pull_id in company.in_progress.items()
            }

    def data_status(self, company_id: str) -> dict[str, Record]:
        """What ``/dataStatus`` answers for the company."""
        with self._lock:
            return copy.deepcopy(self._company(company_id).statuses)

    # ----------------------------------------------------------------- state: push operations

    def add_push_operation(
        self,
        company_id: str,
        *,
        key: str,
        data_type: str,
        status: str,
        requested: datetime,
        error_message: str | None = None,
        validation_errors: list[dict[str, Any]] | None = None,
        record_id: str | None = None,
        connection_id: str | None = None,
        completed: datetime | None = None,
        change_type: str = "Created",
        status_code: int | None = None,
    ) -> Record:
        """Upsert a ``PushOperation`` (keyed by ``key``) and return it.

        ``statusCode`` defaults to 202 Pending, 200 Success, 400 Failed, 504 TimedOut.
        A finished operation gets ``completedOnUtc`` (``completed`` or now); a
        successful one with ``record_id`` lists the change.
        """
        _check_data_type(data_type)
        if status not in _PUSH_STATUS_CODES:
            raise ValueError(f"{status!r} is not a push status: {sorted(_PUSH_STATUS_CODES)}")
        with self._lock:
            company = self._company(company_id)
            changes: list[Record] = []
            if record_id is not None and status == "Success":
                changes.append(
                    {
                        "type": change_type,
                        "recordRef": {"id": record_id, "dataType": data_type},
                        "attachmentId": None,
                    }
                )
            operation: Record = {
                "changes": changes,
                "dataType": data_type,
                "companyId": company_id,
                "pushOperationKey": key,
                "dataConnectionKey": connection_id or company.connections[0],
                "requestedOnUtc": iso(requested),
                "status": status,
                "errorMessage": error_message,
                "validation": {"errors": copy.deepcopy(validation_errors or []), "warnings": []},
                "statusCode": status_code or _PUSH_STATUS_CODES[status],
            }
            if status != "Pending":
                finished = completed or max(_aware(self.now()), _aware(requested))
                operation["completedOnUtc"] = iso(finished)
            company.push_operations[key] = operation
            return copy.deepcopy(operation)

    # ----------------------------------------------------------------- webhooks consumers

    @property
    def webhook_consumers(self) -> list[Record]:
        """Consumers created through ``POST /webhooks``."""
        with self._lock:
            return copy.deepcopy(list(self._consumers.values()))

    # ----------------------------------------------------------------- faults, calls

    def fail_next(
        self,
        path_substring: str,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next ``times`` requests whose path contains ``path_substring`` get ``status``.

        The answer is an ``ErrorMessage`` after ``delay`` seconds, with
        ``Retry-After: <retry_after>`` when given. Faults are used in the order added.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_Fault(path_substring, status, times, retry_after, delay))

    def clear_faults(self) -> None:
        """Drop the faults not yet used."""
        with self._lock:
            self._faults.clear()

    @property
    def calls(self) -> list[FakeCall]:
        """Every request received, in arrival order (a snapshot list)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, path_substring: str) -> list[FakeCall]:
        """The requests whose path contains ``path_substring``."""
        return [call for call in self.calls if path_substring in call.path]

    def reset_calls(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._calls.clear()

    # ----------------------------------------------------------------- ASGI plumbing

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the call, apply delays, faults and auth, then route."""
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        request = Request(scope)
        call = FakeCall(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            status=0,
            time=self.now(),
            headers=dict(request.headers),
        )
        with self._lock:
            self._calls.append(call)
            fault = self._take_fault(call.path)
            day = _aware(call.time).astimezone(UTC).date().isoformat()
            used = self._requests_by_day[day] = self._requests_by_day.get(day, 0) + 1
        reset = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        rate_headers = [
            (b"x-rate-limit-limit", str(self.daily_quota).encode()),
            (b"x-rate-limit-remaining", str(max(self.daily_quota - used, 0)).encode()),
            (b"x-rate-limit-reset", iso(reset).encode()),
        ]

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *rate_headers]
            await send(message)

        if self.delay_all > 0:
            await asyncio.sleep(self.delay_all)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            response = CodatError(fault.status, headers=headers).response()
            await response(scope, receive, send_recording)
            return
        if not self._authorized(request.headers.get("authorization")):
            await CodatError(401).response()(scope, receive, send_recording)
            return
        await self._router(scope, receive, send_recording)

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path_substring in path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        expected = "Basic " + base64.b64encode(self.api_key.encode()).decode()
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def _build_router(self) -> Starlette:
        company = "/companies/{companyId}"
        bank_accounts = company + "/connections/{connectionId}/data/bankAccounts"
        routes = [
            Route(company + "/dataStatus", self._get_data_status, methods=["GET"]),
            Route(company + "/data/info", self._get_company_info, methods=["GET"]),
            Route(company + "/data/all", self._refresh_all, methods=["POST"]),
            Route(company + "/data/queue/{dataType}", self._queue_pull, methods=["POST"]),
            Route(company + "/data/history", self._list_pulls, methods=["GET"]),
            Route(company + "/data/history/{datasetId}", self._get_pull, methods=["GET"]),
            Route(company + "/data/{segment}", self._list_records, methods=["GET"]),
            Route(company + "/data/{segment}/{recordId}", self._get_record, methods=["GET"]),
            Route(bank_accounts, self._list_bank_accounts, methods=["GET"]),
            Route(bank_accounts + "/{recordId}", self._get_bank_account, methods=["GET"]),
            Route(company + "/push", self._list_push_operations, methods=["GET"]),
            Route(company + "/push/{pushOperationKey}", self._get_push_operation, methods=["GET"]),
            Route("/webhooks", self._list_consumers, methods=["GET"]),
            Route("/webhooks", self._create_consumer, methods=["POST"]),
            Route("/webhooks/{webhookId}", self._delete_consumer, methods=["DELETE"]),
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            return CodatError(status).response()

        async def codat_error(request: Request, exc: Exception) -> Response:
            if isinstance(exc, CodatError):
                return exc.response()
            return CodatError(500).response()

        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, CodatError: codat_error},
        )

    # ----------------------------------------------------------------- handlers: helpers

    def _known_company(self, request: Request) -> _Company:
        company_id = request.path_params["companyId"]
        company = self._companies.get(company_id)
        if company is None:
            raise CodatError(
                404, f"No company was found with ID {company_id}", service="ClientsApi"
            )
        return company

    def _known_connection(self, company: _Company, connection_id: str) -> None:
        if connection_id not in company.connections:
            raise CodatError(404, f"Data connection {connection_id} not found")

    def _require_synced(self, company: _Company, data_type: str) -> None:
        status = company.statuses.get(data_type)
        if status is None:
            raise CodatError(409, "The data set has not been requested.")
        if not status.get("lastSuccessfulSync"):
            raise CodatError(409, "The data set is still syncing.")

    def _page(
        self,
        request: Request,
        items: list[Record],
        *,
        known_fields: frozenset[str] | None,
        type_name: str,
    ) -> Response:
        """Filter, order and page ``items`` (already in the default order)."""
        params = request.query_params
        page = _int_param(params.get("page"), "page", default=1, low=1)
        page_size = _int_param(
            params.get("pageSize"), "pageSize", default=100, low=1, high=MAX_PAGE_SIZE
        )
        query, order_by = params.get("query") or None, params.get("orderBy") or None
        try:
            node = parse_query(query) if query else None
            tops = [path[0] for path in (_fields(node) if node else [])]
            if order_by:
                tops.append(order_by.lstrip("-").split(".")[0])
            known = {name.lower() for name in known_fields or ()}
            for top in tops:
                if known_fields is not None and top.lower() not in known:
                    raise QueryError(
                        f"Error parsing query - Could not resolve property {top} on {type_name}"
                    )
            selected = [item for item in items if node is None or _matches(node, item)]
            selected = _order(selected, order_by)
        except QueryError as exc:
            raise CodatError(400, str(exc)) from None
        start = (page - 1) * page_size
        path = request.url.path
        links: Record = {
            "self": {"href": path},
            "current": {"href": _href(path, page, page_size, query, order_by)},
        }
        if start + page_size < len(selected) or self.next_link_fault == "endless":
            links["next"] = {"href": _href(path, page + 1, page_size, query, order_by)}
        if self.next_link_fault in _MOVED_PATH:
            moved = _MOVED_PATH[self.next_link_fault](path)
            links["next"] = {"href": _href(moved, page + 1, page_size, query, order_by)}
        elif self.next_link_fault == "repeat":
            links["next"] = dict(links["current"])
        if page > 1:
            links["previous"] = {"href": _href(path, page - 1, page_size, query, order_by)}
        body = {
            "results": copy.deepcopy(selected[start : start + page_size]),
            "pageNumber": page,
            "pageSize": page_size,
            "totalResults": len(selected),
            "_links": links,
        }
        return JSONResponse(body)

    def _record_list(
        self, request: Request, company: _Company, data_type: str, connection: str | None
    ) -> Response:
        self._require_synced(company, data_type)
        stored = company.records.get(data_type, {})
        items = [
            record
            for record_id, record in stored.items()
            if connection is None or company.record_connection.get(record_id) == connection
        ]
        known = None
        if stored:
            known = _COMMON_RECORD_FIELDS | {key for record in stored.values() for key in record}
        return self._page(
            request, sorted(items, key=_by_modified), known_fields=known, type_name=data_type
        )

    def _one_record(
        self, company: _Company, data_type: str, record_id: str, connection: str | None
    ) -> Response:
        self._require_synced(company, data_type)
        record = company.records.get(data_type, {}).get(record_id)
        if record is None or (
            connection is not None and company.record_connection.get(record_id) != connection
        ):
            raise CodatError(404, f"No data available for {data_type} with ID {record_id}")
        return JSONResponse(copy.deepcopy(record))

    # ----------------------------------------------------------------- handlers: data

    async def _list_records(self, request: Request) -> Response:
        data_type = LIST_PATHS.get(request.path_params["segment"])
        with self._lock:
            company = self._known_company(request)
            if data_type is None:
                raise CodatError(404, f"No data available for {request.path_params['segment']}")
            return self._record_list(request, company, data_type, None)

    async def _get_record(self, request: Request) -> Response:
        data_type = LIST_PATHS.get(request.path_params["segment"])
        with self._lock:
            company = self._known_company(request)
            if data_type is None:
                raise CodatError(404, f"No data available for {request.path_params['segment']}")
            return self._one_record(company, data_type, request.path_params["recordId"], None)

    async def _list_bank_accounts(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            connection = request.path_params["connectionId"]
            self._known_connection(company, connection)
            return self._record_list(request, company, "bankAccounts", connection)

    async def _get_bank_account(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            connection = request.path_params["connectionId"]
            self._known_connection(company, connection)
            record_id = request.path_params["recordId"]
            return self._one_record(company, "bankAccounts", record_id, connection)

    async def _get_company_info(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            self._require_synced(company, "company")
            return JSONResponse(copy.deepcopy(company.info))

    async def _get_data_status(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            return JSONResponse(copy.deepcopy(company.statuses))

    # ----------------------------------------------------------------- handlers: refresh, pulls

    async def _refresh_all(self, request: Request) -> Response:
        with self._lock:
            self._known_company(request)
        return Response(status_code=204)

    async def _queue_pull(self, request: Request) -> Response:
        data_type = request.path_params["dataType"]
        connection_id = request.query_params.get("connectionId")
        moment = self.now()
        with self._lock:
            company = self._known_company(request)
            if data_type not in DATA_TYPES:
                raise CodatError(400, f"Error processing request - unknown data type {data_type}")
            if connection_id is not None:
                self._known_connection(company, connection_id)
            running = company.in_progress.get(data_type)
            if running is not None:
                raise CodatError(
                    self.already_in_progress_status,
                    f"DatasetAlreadyInProgressException: Cannot queue {data_type} sync for "
                    f"{company.id} as previous sync {running} is still in progress",
                )
            pull_id = str(uuid.uuid4())
            pull: Record = {
                "id": pull_id,
                "companyId": company.id,
                "connectionId": connection_id or company.connections[0],
                "dataType": data_type,
                "status": "Queued",
                "statusDescription": None,
                "errorMessage": None,
                "requested": iso(moment),
                "progress": 0,
                "isCompleted": False,
                "isErrored": False,
            }
            company.pulls[pull_id] = pull
            company.in_progress[data_type] = pull_id
            entry = company.statuses.setdefault(data_type, {"dataType": data_type})
            entry.update(currentStatus="Queued", latestSyncId=pull_id)
            return JSONResponse(copy.deepcopy(pull))

    async def _list_pulls(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            items = sorted(company.pulls.values(), key=_default_key("requested", "id"))
            return self._page(request, items, known_fields=_PULL_FIELDS, type_name="Dataset")

    async def _get_pull(self, request: Request) -> Response:
        with self._lock:
            company = self._known_company(request)
            pull = company.pulls.get(request.path_params["datasetId"])
            if pull is None:
                raise CodatError(404, f"Dataset {request.path_params['datasetId']} not found")
            return JSONResponse(copy.deepcopy(pull))

    # ----------------------------------------------------------------- handlers: push

    async def _list_push_operations(self, request: Request) -> Response:
        if self.refuse_push_query and request.query_params.get("query"):
            raise CodatError(400, "Error parsing query - queries are not supported on push.")
        with self._lock:
            company = self._known_company(request)
            items = sorted(
                company.push_operations.values(),
                key=_default_key("requestedOnUtc", "pushOperationKey"),
            )
            return self._page(request, items, known_fields=_PUSH_FIELDS, type_name="PushOperation")

    async def _get_push_operation(self, request: Request) -> Response:
        key = request.path_params["pushOperationKey"]
        with self._lock:
            company = self._known_company(request)
            operation = company.push_operations.get(key)
            if operation is None:
                raise CodatError(404, f"Push operation {key} not found")
            return JSONResponse(copy.deepcopy(operation))

    # ----------------------------------------------------------------- handlers: webhooks

    async def _list_consumers(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse({"results": copy.deepcopy(list(self._consumers.values()))})

    async def _create_consumer(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise CodatError(400, "Error processing request - body is not JSON.") from None
        consumer = _consumer_from(body)
        with self._lock:
            self._consumers[consumer["id"]] = consumer
        return JSONResponse(copy.deepcopy(consumer), status_code=201)

    async def _delete_consumer(self, request: Request) -> Response:
        webhook_id = request.path_params["webhookId"]
        with self._lock:
            if self._consumers.pop(webhook_id, None) is None:
                raise CodatError(404, f"Webhook consumer {webhook_id} not found")
        return Response(status_code=204)


def _consumer_from(body: Any) -> Record:
    """Validate a ``webhookConsumerPrototype`` and build the ``WebhookConsumer``."""
    if not isinstance(body, dict):
        raise CodatError(400, "Error processing request - expected a JSON object.")
    url, event_types = body.get("url"), body.get("eventTypes", [])
    disabled, tags = body.get("disabled", False), body.get("companyTags")
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise CodatError(400, "Error processing request - 'url' must be an http(s) URL.")
    if not isinstance(event_types, list) or not all(isinstance(e, str) for e in event_types):
        raise CodatError(400, "Error processing request - 'eventTypes' must be a list of strings.")
    if disabled is not None and not isinstance(disabled, bool):
        raise CodatError(400, "Error processing request - 'disabled' must be a boolean.")
    consumer: Record = {
        "id": str(uuid.uuid4()),
        "url": url,
        "eventTypes": list(event_types),
        "disabled": bool(disabled),
    }
    if tags is not None:
        if (
            not isinstance(tags, list)
            or len(tags) > 10
            or not all(isinstance(tag, str) and len(tag) <= 128 for tag in tags)
        ):
            raise CodatError(
                400,
                "Error processing request - at most 10 companyTags, each at most 128 characters.",
            )
        consumer["companyTags"] = list(tags)
    return consumer


def _int_param(
    raw: str | None, name: str, *, default: int, low: int, high: int | None = None
) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CodatError(400, f"Error processing request - {name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise CodatError(400, f"Error processing request - {name} must be {bounds}.")
    return value


def _href(path: str, page: int, page_size: int, query: str | None, order_by: str | None) -> str:
    params: list[tuple[str, str]] = [("page", str(page)), ("pageSize", str(page_size))]
    if query:
        params.append(("query", query))
    if order_by:
        params.append(("orderBy", order_by))
    return path + "?" + urlencode(params, quote_via=quote)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _check_record_type(data_type: str) -> None:
    if data_type not in RECORD_DATA_TYPES:
        hint = " (chartOfAccounts is served at /data/accounts)" if data_type == "accounts" else ""
        raise ValueError(
            f"{data_type!r} is not a record data type{hint}: {sorted(RECORD_DATA_TYPES)}"
        )


def _check_data_type(data_type: str) -> None:
    if data_type not in DATA_TYPES:
        raise ValueError(f"{data_type!r} is not a Codat data type")


class _App:
    """ASGI 3 entry point: a callable object with an async ``__call__``, which is what
    servers inspect to tell ASGI 3 from ASGI 2 (a bound method reads as ASGI 2)."""

    def __init__(self, fake: FakeCodat) -> None:
        self._fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._fake._asgi(scope, receive, send)


# --------------------------------------------------------------------------- serving


@contextlib.contextmanager
def run_fake_codat(fake: FakeCodat, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``fake.app`` with uvicorn on 127.0.0.1 (ephemeral port) in a thread.

    Yields the base URL. Works from sync code and from inside a running event
    loop (the server has its own loop in its own thread).
    """
    with serve_in_thread(fake.app, "fake-codat", startup_timeout=startup_timeout) as url:
        yield url


@contextlib.contextmanager
def serve_in_thread(app: Any, name: str, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Any ASGI app served as `run_fake_codat` serves the fake (tests' own servers too)."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets of
    # a TCP-proto listener, and without it small answers wait ~40 ms (Nagle/delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the test process's logging configuration alone
        log_level="warning",
        access_log=False,
        lifespan="off",
        interface="asgi3",
        loop="asyncio",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)

    thread = threading.Thread(target=serve, name=f"{name}-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    try:
        while not server.started:
            if failures or not thread.is_alive():
                cause = failures[0] if failures else None
                raise RuntimeError(f"the {name} server did not start") from cause
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {name} server did not start in time")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()


# --------------------------------------------------------------------------- record builders


def make_bill(
    bill_id: str,
    *,
    supplier_id: str = "sup-1",
    supplier_name: str = "Kelly's Industrial Supplies",
    amount: float = 120.0,
    status: str = "Open",
    currency: str = "GBP",
    issue_date: str = "2026-05-01T00:00:00",
    due_date: str = "2026-05-31T00:00:00",
    tax_rate: float = 20.0,
    reference: str | None = None,
) -> Record:
    """A v1 ``Bill`` (accounting bill) of ``amount`` including tax, one line item."""
    sub_total = round(amount / (1 + tax_rate / 100), 2)
    tax = round(amount - sub_total, 2)
    paid = status == "Paid"
    return {
        "id": bill_id,
        "reference": reference if reference is not None else f"REF-{bill_id}",
        "supplierRef": {"id": supplier_id, "supplierName": supplier_name},
        "purchaseOrderRefs": [],
        "issueDate": issue_date,
        "dueDate": due_date,
        "currency": currency,
        "currencyRate": 1,
        "lineItems": [
            {
                "description": "Goods received",
                "unitAmount": sub_total,
                "quantity": 1,
                "discountAmount": 0,
                "subTotal": sub_total,
                "taxAmount": tax,
                "totalAmount": amount,
                "accountRef": {"id": "acc-expenses", "name": "General Expenses"},
                "taxRateRef": {"id": "tax-std", "name": "Standard", "effectiveTaxRate": tax_rate},
                "trackingCategoryRefs": [],
                "isDirectCost": False,
            }
        ],
        "withholdingTax": [],
        "status": status,
        "subTotal": sub_total,
        "taxAmount": tax,
        "totalAmount": amount,
        "amountDue": 0 if paid else amount,
        "note": None,
        "paymentAllocations": [],
        "metadata": {"isDeleted": False},
    }


def make_supplier(
    supplier_id: str,
    *,
    name: str = "Kelly's Industrial Supplies",
    status: str = "Active",
    currency: str = "GBP",
    email: str | None = "sales@example.com",
) -> Record:
    """A v1 ``Supplier``."""
    return {
        "id": supplier_id,
        "supplierName": name,
        "contactName": name,
        "emailAddress": email,
        "phone": "01224 658 999",
        "addresses": [
            {
                "type": "Billing",
                "line1": "Unit 51",
                "city": "Bakersfield",
                "country": "USA",
                "postalCode": "93308",
            }
        ],
        "registrationNumber": None,
        "taxNumber": None,
        "status": status,
        "defaultCurrency": currency,
        "metadata": {"isDeleted": False},
    }


def make_account(
    account_id: str,
    *,
    name: str = "General Expenses",
    account_type: str = "Expense",
    status: str = "Active",
    currency: str = "GBP",
    is_bank_account: bool = False,
) -> Record:
    """A v1 ``Account`` (chartOfAccounts, served at ``/data/accounts``)."""
    return {
        "id": account_id,
        "nominalCode": account_id[-10:],
        "name": name,
        "description": None,
        "fullyQualifiedCategory": f"{account_type}.{name}",
        "fullyQualifiedName": f"{account_type}.{name}",
        "currency": currency,
        "currentBalance": 0,
        "type": account_type,
        "status": status,
        "isBankAccount": is_bank_account,
        "validDatatypeLinks": [],
        "metadata": {"isDeleted": False},
    }


def make_bank_account(
    account_id: str,
    *,
    name: str = "Business Current Account",
    currency: str = "GBP",
    balance: float = 1000.0,
) -> Record:
    """A ``BankAccount`` (v1 components.schemas.BankAccount)."""
    return {
        "id": account_id,
        "accountName": name,
        "accountType": "Debit",
        "nominalCode": account_id[-10:],
        "sortCode": "40-00-01",
        "accountNumber": "12345678",
        "currency": currency,
        "balance": balance,
        "institution": "Example Bank",
        "availableBalance": balance,
        "overdraftLimit": 0,
        "metadata": {"isDeleted": False},
    }


def make_bill_payment(
    payment_id: str,
    *,
    bill_id: str = "bill-1",
    supplier_id: str = "sup-1",
    amount: float = 120.0,
    currency: str = "GBP",
    date: str = "2026-05-20T00:00:00",
) -> Record:
    """A v1 ``BillPayment`` paying ``amount`` against one bill."""
    return {
        "id": payment_id,
        "supplierRef": {"id": supplier_id},
        "accountRef": {"id": "bank-1", "name": "Business Current Account"},
        "totalAmount": amount,
        "currency": currency,
        "currencyRate": 1,
        "date": date,
        "note": None,
        "lines": [
            {"amount": amount, "links": [{"type": "Bill", "id": bill_id, "amount": -amount}]}
        ],
        "reference": None,
        "metadata": {"isDeleted": False},
    }


def make_bill_credit_note(
    credit_note_id: str,
    *,
    supplier_id: str = "sup-1",
    amount: float = 50.0,
    status: str = "Submitted",
    currency: str = "GBP",
) -> Record:
    """A v1 ``BillCreditNote``."""
    return {
        "id": credit_note_id,
        "billCreditNoteNumber": credit_note_id,
        "supplierRef": {"id": supplier_id},
        "totalAmount": amount,
        "totalDiscount": 0,
        "subTotal": amount,
        "totalTaxAmount": 0,
        "discountPercentage": 0,
        "remainingCredit": amount,
        "status": status,
        "issueDate": "2026-05-02T00:00:00",
        "currency": currency,
        "currencyRate": 1,
        "lineItems": [],
        "paymentAllocations": [],
        "note": None,
        "metadata": {"isDeleted": False},
    }


def make_payment_method(
    method_id: str, *, name: str = "Bank transfer", method_type: str = "BankTransfer"
) -> Record:
    """A v1 ``PaymentMethod``."""
    return {
        "id": method_id,
        "name": name,
        "type": method_type,
        "status": "Active",
        "metadata": {"isDeleted": False},
    }


def make_tax_rate(tax_rate_id: str, *, name: str = "Standard", rate: float = 20.0) -> Record:
    """A v1 ``TaxRate``."""
    return {
        "id": tax_rate_id,
        "name": name,
        "code": tax_rate_id,
        "effectiveTaxRate": rate,
        "totalTaxRate": rate,
        "status": "Active",
        "components": [{"name": name, "rate": rate, "isCompound": False}],
        "metadata": {"isDeleted": False},
    }


def make_tracking_category(
    category_id: str, *, name: str = "Department", parent_id: str | None = None
) -> Record:
    """A v1 ``TrackingCategory``."""
    return {
        "id": category_id,
        "name": name,
        "status": "Active",
        "parentId": parent_id,
        "hasChildren": False,
        "metadata": {"isDeleted": False},
    }


def make_company_info(name: str = "Toft stores", *, base_currency: str = "GBP") -> Record:
    """A v1 ``CompanyInfo`` (what ``/data/info`` answers)."""
    return {
        "companyName": name,
        "accountingPlatformRef": str(uuid.uuid4()),
        "companyLegalName": f"{name} Ltd.",
        "addresses": [],
        "phoneNumbers": [],
        "webLinks": [],
        "registrationNumber": None,
        "taxNumber": None,
        "financialYearStartDate": "2026-04-01T00:00:00Z",
        "baseCurrency": base_currency,
        "sourceUrls": {},
        "createdDate": "2020-02-03T16:42:02Z",
    }
