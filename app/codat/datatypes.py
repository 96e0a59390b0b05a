"""Which data types Bill Pay needs, and where Codat serves each one."""

from __future__ import annotations

import re
from typing import Literal

from app.codat.ids import id_segment

Variant = Literal["async", "sync"]

# Codat's "Get started with Bill Pay" table (CODAT.md §3.2): the types each variant fetches
# on first link, so the types an initial read must carry complete.
BILL_PAY_DATA_TYPES: dict[Variant, tuple[str, ...]] = {
    "async": (
        "bankAccounts",
        "bills",
        "billCreditNotes",
        "billPayments",
        "chartOfAccounts",
        "company",
        "paymentMethods",
        "suppliers",
        "taxRates",
        "trackingCategories",
    ),
    "sync": (
        "bankAccounts",
        "bills",
        "billPayments",
        "chartOfAccounts",
        "company",
        "paymentMethods",
        "suppliers",
    ),
}

# Cached (v1 / accounting) list paths; the key is Codat's dataType name.
_LIST_PATHS = {
    "bills": "data/bills",
    "billCreditNotes": "data/billCreditNotes",
    "billPayments": "data/billPayments",
    "chartOfAccounts": "data/accounts",
    "paymentMethods": "data/paymentMethods",
    "suppliers": "data/suppliers",
    "taxRates": "data/taxRates",
    "trackingCategories": "data/trackingCategories",
}
SINGLE_OBJECT_TYPES = {"company": "data/info"}
CONNECTION_SCOPED_TYPES = {"bankAccounts": "data/bankAccounts"}

PULLABLE_DATA_TYPES = (
    frozenset(_LIST_PATHS) | frozenset(SINGLE_OBJECT_TYPES) | frozenset(CONNECTION_SCOPED_TYPES)
)


def list_path(company_id: str, data_type: str, connection_id: str | None) -> str:
    """Where a data type is read; ids are checked and encoded (`app/codat/ids.py`)."""
    company = f"/companies/{id_segment(company_id, 'company id')}"
    if data_type in CONNECTION_SCOPED_TYPES:
        if not connection_id:
            raise ValueError(f"{data_type} is read per connection: a connection id is needed")
        connection = id_segment(connection_id, "connection id")
        return f"{company}/connections/{connection}/{CONNECTION_SCOPED_TYPES[data_type]}"
    if data_type in SINGLE_OBJECT_TYPES:
        return f"{company}/{SINGLE_OBJECT_TYPES[data_type]}"
    if data_type not in _LIST_PATHS:
        raise ValueError(f"no known read path for data type {data_type!r}")
    return f"{company}/{_LIST_PATHS[data_type]}"


# `{dataType}.write.successful` / `.unsuccessful` (CODAT.md §1.3).
WRITE_EVENT = re.compile(r"(\w+)\.write\.(successful|unsuccessful)")


def write_data_type(name: str) -> str:
    """`bill.write.*` (Codat's get-started page) means the `bills` data type."""
    if name in PULLABLE_DATA_TYPES or name + "s" not in PULLABLE_DATA_TYPES:
        return name
    return name + "s"


# What `register-webhook` subscribes to: reads, writes of the types Bill Pay writes, the
# rate limit, and every connection and company lifecycle event (CODAT.md §1).
LIFECYCLE_EVENT_TYPES = (
    "connection.created",
    "connection.connected",
    "connection.reconnected",
    "connection.disconnected",
    "connection.failed",
    "connection.deleted",
    "company.created",
    "company.deleted",
)
BILL_PAY_EVENT_TYPES = (
    "read.completed.initial",
    "read.completed",
    *(
        f"{data_type}.write.{outcome}"
        for data_type in ("bills", "billPayments", "suppliers", "bankAccounts", "billCreditNotes")
        for outcome in ("successful", "unsuccessful")
    ),
    "client.rateLimit.reached",
    "client.rateLimit.reset",
    *LIFECYCLE_EVENT_TYPES,
)


# How much one event may name. Codat documents no limit; it has a few dozen data types and
# names them in camelCase words, so these are guesses with room to spare. Past them a signed
# event is kept aside as unprocessable rather than let it create rows without bound.
MAX_DATA_TYPES_PER_EVENT = 64
# Also the width of every data_type column (tests/test_hostile_payloads.py checks).
MAX_DATA_TYPE_LENGTH = 64

# The metric label of an event type Codat does not document: a sender cannot add labels.
OTHER_EVENT_TYPE = "other"


def is_known_event_type(event_type: str) -> bool:
    """One of Codat's documented event types (CODAT.md §1), writes of any data type here."""
    if event_type in BILL_PAY_EVENT_TYPES:
        return True
    match = WRITE_EVENT.fullmatch(event_type)
    return match is not None and write_data_type(match[1]) in PULLABLE_DATA_TYPES


def event_type_label(event_type: str | None) -> str:
    """The event type as a metric label: known ones as they are, the rest `other`."""
    if not event_type:
        return ""
    return event_type if is_known_event_type(event_type) else OTHER_EVENT_TYPE
