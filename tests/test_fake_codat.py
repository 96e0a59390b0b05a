"""The fake Codat is only worth testing against if it answers like Codat.

Every answer here is validated against Codat's published OpenAPI schemas
(shared/codat-oas), so a drift between the fake and the specs fails a test.
The sample webhook bodies in shared/samples are checked the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sandbox.fake_codat import (
    LIST_PATHS,
    FakeCodat,
    iso,
    make_account,
    make_bank_account,
    make_bill,
    make_bill_credit_note,
    make_bill_payment,
    make_payment_method,
    make_supplier,
    make_tax_rate,
    make_tracking_category,
    run_fake_codat,
)
from tests.conftest import sample
from tests.support import oas

V1 = oas.PAYABLES_V1
PLATFORM = oas.PLATFORM
COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"
OTHER_CONNECTION = "12571faf-0898-47e7-afdd-0fe9eb0a9bf5"
T0 = datetime(2026, 5, 3, 10, 0, tzinfo=UTC)
SAMPLES = oas.samples_dir()

MAKERS: dict[str, Any] = {
    "bills": make_bill,
    "suppliers": make_supplier,
    "billPayments": make_bill_payment,
    "billCreditNotes": make_bill_credit_note,
    "paymentMethods": make_payment_method,
    "taxRates": make_tax_rate,
    "trackingCategories": make_tracking_category,
    "chartOfAccounts": make_account,
    "bankAccounts": make_bank_account,
}
SCHEMA_OF = {
    "bills": "Bill",
    "suppliers": "Supplier",
    "billPayments": "BillPayment",
    "billCreditNotes": "BillCreditNote",
    "paymentMethods": "PaymentMethod",
    "taxRates": "TaxRate",
    "trackingCategories": "TrackingCategory",
    "chartOfAccounts": "Account",
    "bankAccounts": "BankAccount",
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current


def assert_valid(validator: oas.SchemaValidator, instance: object) -> None:
    problems = oas.error_messages(validator, instance)
    assert problems == [], "\n".join(problems)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeCodat, str]]:
    """One server for the module (starting and stopping uvicorn costs ~0.2 s)."""
    codat = FakeCodat()
    with run_fake_codat(codat) as base_url:
        yield codat, base_url


@pytest.fixture
def fake(served: tuple[FakeCodat, str], clock: Clock) -> FakeCodat:
    codat = served[0]
    codat.reset()
    codat.now = clock
    codat.add_company(COMPANY, CONNECTION)
    return codat


@pytest.fixture
def client(served: tuple[FakeCodat, str], fake: FakeCodat) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=10) as http:
        yield http


def data_path(segment: str) -> str:
    return f"/companies/{COMPANY}/data/{segment}"


def walk(client: httpx.Client, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow `_links.next` from the first page; return every record and the page count."""
    records: list[dict[str, Any]] = []
    response = client.get(path, params=params)
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        records.extend(body["results"])
        link = body["_links"].get("next")
        if link is None:
            return records, pages
        response = client.get(link["href"])


# --------------------------------------------------------------------------- samples, loader


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.json"))


@pytest.mark.parametrize("path", sample_files(), ids=lambda path: path.stem)
def test_every_sample_validates_against_its_webhook_schema(path: Path) -> None:
    body = json.loads(path.read_bytes())
    event_type = body["eventType"]
    if event_type == "bill.write.successful":
        # The singular name comes from Codat's Bill Pay get-started page only; the
        # spec, the event catalog and the push docs use the plural data-type key.
        assert event_type not in oas.load_spec(PLATFORM)["webhooks"]
        event_type = "bills.write.successful"
    assert_valid(oas.webhook_event_validator(event_type), body)


def test_samples_are_present() -> None:
    assert len(sample_files()) >= 10


def test_nullable_fields_accept_null() -> None:
    body = sample("bills.write.unsuccessful")
    body["payload"].update(record=None, attachmentId=None)
    assert_valid(oas.webhook_event_validator("bills.write.unsuccessful"), body)
    body["payload"]["status"] = None  # not nullable in the spec
    assert not oas.webhook_event_validator("bills.write.unsuccessful").is_valid(body)


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(KeyError):
        oas.webhook_event_validator("bills.deleted")


@pytest.mark.parametrize("spec_file", [V1, PLATFORM])
def test_the_specs_own_response_examples_validate(spec_file: str) -> None:
    """Proves the loader (refs, nullable rewrite): Codat's hundreds of examples pass."""
    checked = 0
    for path, item in oas.load_spec(spec_file)["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue  # path-level "parameters", "summary"
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {}).get("application/json", {})
                examples = content.get("examples", {})
                if not examples or "$ref" in response:
                    continue
                validator = oas.response_validator(spec_file, path, method, status)
                for example in examples.values():
                    if "value" in example:
                        assert_valid(validator, example["value"])
                        checked += 1
    assert checked > 30


@pytest.mark.parametrize("data_type", sorted(MAKERS))
def test_record_builders_validate(data_type: str) -> None:
    record = MAKERS[data_type](f"{data_type}-1")
    record["modifiedDate"] = iso(T0)
    assert_valid(oas.load_schema_validator(V1, SCHEMA_OF[data_type]), record)


# --------------------------------------------------------------------------- list endpoints


@pytest.mark.parametrize("segment", sorted(LIST_PATHS))
def test_list_responses_validate(fake: FakeCodat, client: httpx.Client, segment: str) -> None:
    data_type = LIST_PATHS[segment]
    for i in range(3):
        fake.put_record(COMPANY, data_type, MAKERS[data_type](f"{segment}-{i}"))
    fake.complete_sync(COMPANY, data_type)
    response = client.get(data_path(segment), params={"pageSize": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid(
        oas.response_validator(V1, f"/companies/{{companyId}}/data/{segment}", "get"), body
    )
    assert body["totalResults"] == 3
    assert len(body["results"]) == 2
    assert all(record["metadata"] == {"isDeleted": False} for record in body["results"])
    one = client.get(data_path(f"{segment}/{segment}-0"))
    assert one.status_code == 200
    schema_path = f"/companies/{{companyId}}/data/{segment}/" + "{" + _id_param(segment) + "}"
    assert_valid(oas.response_validator(V1, schema_path, "get"), one.json())


def _id_param(segment: str) -> str:
    names = {
        "accounts": "accountId",
        "billCreditNotes": "billCreditNoteId",
        "billPayments": "billPaymentId",
        "bills": "billId",
        "paymentMethods": "paymentMethodId",
        "suppliers": "supplierId",
        "taxRates": "taxRateId",
        "trackingCategories": "trackingCategoryId",
    }
    return names[segment]


def test_bank_accounts_live_under_the_connection(fake: FakeCodat, client: httpx.Client) -> None:
    fake.add_company(COMPANY, OTHER_CONNECTION)
    fake.put_record(COMPANY, "bankAccounts", make_bank_account("ba-1"))
    fake.put_record(
        COMPANY, "bankAccounts", make_bank_account("ba-2"), connection_id=OTHER_CONNECTION
    )
    fake.complete_sync(COMPANY, "bankAccounts")
    path = f"/companies/{COMPANY}/connections/{CONNECTION}/data/bankAccounts"
    response = client.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid(oas.load_schema_validator(V1, "PagingInfo"), body)
    for record in body["results"]:
        assert_valid(oas.load_schema_validator(V1, "BankAccount"), record)
    assert [record["id"] for record in body["results"]] == ["ba-1"]
    assert body["_links"]["self"]["href"] == path
    assert client.get(f"{path}/ba-1").status_code == 200
    assert client.get(f"{path}/ba-2").status_code == 404
    assert client.get(data_path("bankAccounts")).status_code == 404
    unknown = client.get(f"/companies/{COMPANY}/connections/{uuid.uuid4()}/data/bankAccounts")
    assert unknown.status_code == 404
    assert_valid(oas.load_schema_validator(PLATFORM, "ErrorMessage"), unknown.json())


def test_company_info_is_a_single_object(fake: FakeCodat, client: httpx.Client) -> None:
    assert client.get(data_path("info")).status_code == 409
    fake.complete_sync(COMPANY, "company")
    response = client.get(data_path("info"))
    assert response.status_code == 200
    assert_valid(
        oas.response_validator(V1, "/companies/{companyId}/data/info", "get"), response.json()
    )
    assert "results" not in response.json()


def test_paging_walks_next_links_to_the_end(fake: FakeCodat, client: httpx.Client) -> None:
    for i in range(23):
        fake.put_record(
            COMPANY, "bills", make_bill(f"bill-{i:02d}"), modified=T0 + timedelta(seconds=i)
        )
    fake.complete_sync(COMPANY, "bills")
    records, pages = walk(client, data_path("bills"), pageSize=5)
    ids = [record["id"] for record in records]
    assert pages == 5
    assert sorted(ids) == [f"bill-{i:02d}" for i in range(23)]
    assert len(set(ids)) == len(ids) == 23

    first = client.get(data_path("bills"), params={"pageSize": 5}).json()
    assert first["_links"]["self"] == {"href": data_path("bills")}
    assert first["_links"]["current"] == {"href": data_path("bills") + "?page=1&pageSize=5"}
    assert first["_links"]["next"] == {"href": data_path("bills") + "?page=2&pageSize=5"}
    assert "previous" not in first["_links"]
    last = client.get(data_path("bills"), params={"page": 5, "pageSize": 5}).json()
    assert "next" not in last["_links"]
    assert last["_links"]["previous"]["href"].endswith("?page=4&pageSize=5")
    assert (last["pageNumber"], last["pageSize"], len(last["results"])) == (5, 5, 3)
    beyond = client.get(data_path("bills"), params={"page": 9, "pageSize": 5}).json()
    assert beyond["results"] == []
    assert beyond["totalResults"] == 23


def test_next_link_keeps_query_and_order(fake: FakeCodat, client: httpx.Client) -> None:
    for i in range(7):
        status = "Open" if i % 2 == 0 else "Paid"
        fake.put_record(COMPANY, "bills", make_bill(f"b{i}", status=status, amount=10.0 + i))
    fake.complete_sync(COMPANY, "bills")
    params: dict[str, str | int] = {
        "pageSize": 2,
        "query": "status=Open",
        "orderBy": "-totalAmount",
    }
    first = client.get(data_path("bills"), params=params).json()
    assert "query=status%3DOpen" in first["_links"]["next"]["href"]
    assert "orderBy=-totalAmount" in first["_links"]["next"]["href"]
    records, _ = walk(client, data_path("bills"), **params)
    assert [record["id"] for record in records] == ["b6", "b4", "b2", "b0"]


def test_default_order_is_modified_date_then_id(fake: FakeCodat, client: httpx.Client) -> None:
    fake.put_record(COMPANY, "suppliers", make_supplier("s-b"), modified=T0)
    fake.put_record(COMPANY, "suppliers", make_supplier("s-c"), modified=T0 - timedelta(days=1))
    fake.put_record(COMPANY, "suppliers", make_supplier("s-a"), modified=T0)
    fake.complete_sync(COMPANY, "suppliers")
    body = client.get(data_path("suppliers")).json()
    assert [record["id"] for record in body["results"]] == ["s-c", "s-a", "s-b"]
    assert [record["id"] for record in fake.records(COMPANY, "suppliers")] == ["s-c", "s-a", "s-b"]


# --------------------------------------------------------------------------- queries, deletions


def test_modified_date_query_returns_only_newer(fake: FakeCodat, client: httpx.Client) -> None:
    stamps = [T0, T0 + timedelta(milliseconds=1500), T0 + timedelta(hours=1)]
    for i, stamp in enumerate(stamps):
        fake.put_record(COMPANY, "bills", make_bill(f"bill-{i}"), modified=stamp)
    fake.complete_sync(COMPANY, "bills")
    assert fake.records(COMPANY, "bills")[1]["modifiedDate"] == "2026-05-03T10:00:01.500Z"

    def ids(query: str) -> list[str]:
        response = client.get(data_path("bills"), params={"query": query})
        assert response.status_code == 200, response.text
        return [record["id"] for record in response.json()["results"]]

    assert ids(f"modifiedDate>{iso(stamps[1])}") == ["bill-2"]
    assert ids(f"modifiedDate>={iso(stamps[1])}") == ["bill-1", "bill-2"]
    assert ids("modifiedDate>2026-05-03T10:00:01Z") == ["bill-1", "bill-2"]
    assert ids("modifiedDate<2026-05-03T10:00:01.5Z") == ["bill-0"]
    assert ids("modifiedDate>2026-05-03T11:00:00+00:00") == []
    assert ids("modifiedDate>2026-05-03") == ["bill-0", "bill-1", "bill-2"]
    assert ids(f"modifiedDate>{iso(stamps[0])}&&metadata.isDeleted!=true") == ["bill-1", "bill-2"]
    assert ids("{id=bill-0 || id=bill-2} && totalAmount>100") == ["bill-0", "bill-2"]
    assert ids("supplierRef.id=SUP-1") == ["bill-0", "bill-1", "bill-2"]  # case-insensitive
    assert ids("status~pe") == ["bill-0", "bill-1", "bill-2"]


def test_deletions_show_as_metadata_is_deleted(
    fake: FakeCodat, client: httpx.Client, clock: Clock
) -> None:
    fake.put_record(COMPANY, "bills", make_bill("keep"))
    fake.put_record(COMPANY, "bills", make_bill("gone"))
    fake.complete_sync(COMPANY, "bills")
    watermark = clock.advance(60)
    clock.advance(60)
    fake.delete_record(COMPANY, "bills", "gone")
    fake.complete_sync(COMPANY, "bills")
    body = client.get(data_path("bills"), params={"query": f"modifiedDate>{iso(watermark)}"}).json()
    assert [(r["id"], r["metadata"]["isDeleted"]) for r in body["results"]] == [("gone", True)]
    assert_valid(oas.response_validator(V1, "/companies/{companyId}/data/bills", "get"), body)
    deleted = client.get(data_path("bills"), params={"query": "metadata.isDeleted=true"}).json()
    assert [record["id"] for record in deleted["results"]] == ["gone"]
    live = client.get(data_path("bills"), params={"query": "metadata.isDeleted!=true"}).json()
    assert [record["id"] for record in live["results"]] == ["keep"]
    stored = {record["id"]: record for record in fake.records(COMPANY, "bills")}
    assert stored["gone"]["metadata"]["isDeleted"] is True
    assert stored["gone"]["modifiedDate"] == iso(clock())


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"pageSize": 5001}, "pageSize"),
        ({"pageSize": 0}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"query": "status Open"}, "Malformed"),
        ({"query": "status=Open &&"}, "Malformed"),
        ({"query": "status=Open && status=Paid || id=x"}, "{ }"),
        ({"query": "{status=Open"}, "missing }"),
        ({"query": "modifiedDate>yesterday"}, "not a date"),
        ({"query": "status>Open"}, "not supported"),
        ({"query": "lineItems.unitAmount=1"}, "arrays"),
        ({"query": "noSuchField=1"}, "Could not resolve property noSuchField"),
        ({"orderBy": "-noSuchField"}, "Could not resolve property noSuchField"),
        ({"query": "x=" + "1" * 2048}, "2048"),
    ],
)
def test_bad_paging_or_query_is_400(
    fake: FakeCodat, client: httpx.Client, params: dict[str, Any], fragment: str
) -> None:
    fake.put_record(COMPANY, "bills", make_bill("bill-1"))
    fake.complete_sync(COMPANY, "bills")
    response = client.get(data_path("bills"), params=params)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert_valid(
        oas.response_validator(V1, "/companies/{companyId}/data/bills", "get", "400"),
        response.json(),
    )


def test_page_size_up_to_5000_is_accepted(fake: FakeCodat, client: httpx.Client) -> None:
    fake.complete_sync(COMPANY, "bills")
    assert client.get(data_path("bills"), params={"pageSize": 5000}).status_code == 200


# --------------------------------------------------------------------------- 404, 409


def test_not_yet_synced_is_409(fake: FakeCodat, client: httpx.Client) -> None:
    fake.put_record(COMPANY, "bills", make_bill("bill-1"))
    response = client.get(data_path("bills"))
    assert response.status_code == 409
    assert_valid(
        oas.response_validator(V1, "/companies/{companyId}/data/bills", "get", "409"),
        response.json(),
    )
    assert response.json()["error"] == "The data set has not been requested."
    client.post(f"/companies/{COMPANY}/data/queue/bills")
    still = client.get(data_path("bills"))
    assert still.status_code == 409
    assert still.json()["error"] == "The data set is still syncing."
    fake.finish_pull(COMPANY, "bills")
    assert client.get(data_path("bills")).status_code == 200


def test_unknown_company_is_404(client: httpx.Client) -> None:
    other = str(uuid.uuid4())
    for path in (f"/companies/{other}/data/bills", f"/companies/{other}/dataStatus"):
        response = client.get(path)
        assert response.status_code == 404
        assert_valid(
            oas.response_validator(V1, "/companies/{companyId}/dataStatus", "get", "404"),
            response.json(),
        )
        assert other in response.json()["error"]
    assert client.get("/no/such/route").status_code == 404


# --------------------------------------------------------------------------- status, pulls


def test_data_status_validates_and_moves_on_sync(
    fake: FakeCodat, client: httpx.Client, clock: Clock
) -> None:
    fake.set_data_status(COMPANY, "bills", last_successful_sync=T0 - timedelta(days=1))
    fake.set_data_status(COMPANY, "suppliers", last_successful_sync=T0, current_status="FetchError")
    before = client.get(f"/companies/{COMPANY}/dataStatus").json()
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/dataStatus", "get"), before
    )
    assert_valid(oas.response_validator(V1, "/companies/{companyId}/dataStatus", "get"), before)
    assert before["bills"]["lastSuccessfulSync"] == "2026-05-02T10:00:00Z"
    assert before["suppliers"]["currentStatus"] == "FetchError"
    assert before["suppliers"]["latestSyncId"] != before["suppliers"]["latestSuccessfulSyncId"]

    clock.advance(30)
    fake.complete_sync(COMPANY, "bills")
    after = client.get(f"/companies/{COMPANY}/dataStatus").json()
    assert after["bills"]["lastSuccessfulSync"] == iso(clock())
    assert after["bills"]["latestSuccessfulSyncId"] != before["bills"]["latestSuccessfulSyncId"]
    assert after["bills"]["latestSyncId"] == after["bills"]["latestSuccessfulSyncId"]
    assert_valid(oas.response_validator(V1, "/companies/{companyId}/dataStatus", "get"), after)


def test_queue_pull_and_already_in_progress(fake: FakeCodat, client: httpx.Client) -> None:
    queue = f"/companies/{COMPANY}/data/queue/bills"
    first = client.post(queue, params={"connectionId": CONNECTION})
    assert first.status_code == 200, first.text
    pull = first.json()
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/data/queue/{dataType}", "post"),
        pull,
    )
    assert (pull["status"], pull["dataType"], pull["connectionId"]) == (
        "Queued",
        "bills",
        CONNECTION,
    )
    assert set(fake.queued_pulls) == {(COMPANY, "bills")}

    second = client.post(queue)
    assert second.status_code == 409
    assert_valid(oas.load_schema_validator(PLATFORM, "ErrorMessage"), second.json())
    assert second.json()["error"] == (
        f"DatasetAlreadyInProgressException: Cannot queue bills sync for {COMPANY} "
        f"as previous sync {pull['id']} is still in progress"
    )
    status = client.get(f"/companies/{COMPANY}/dataStatus").json()["bills"]
    assert (status["currentStatus"], status["latestSyncId"]) == ("Queued", pull["id"])

    fake.finish_pull(COMPANY, "bills")
    assert fake.queued_pulls == {}
    status = client.get(f"/companies/{COMPANY}/dataStatus").json()["bills"]
    assert (status["currentStatus"], status["latestSuccessfulSyncId"]) == ("Complete", pull["id"])
    done = client.get(f"/companies/{COMPANY}/data/history/{pull['id']}").json()
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/data/history/{datasetId}", "get"),
        done,
    )
    assert (done["status"], done["isCompleted"], done["progress"]) == ("Complete", True, 100)
    assert client.post(queue).status_code == 200
    history = client.get(f"/companies/{COMPANY}/data/history", params={"query": "status=Queued"})
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/data/history", "get"),
        history.json(),
    )
    assert history.json()["totalResults"] == 1


def test_failed_pull_keeps_the_last_successful_sync(fake: FakeCodat, client: httpx.Client) -> None:
    fake.complete_sync(COMPANY, "suppliers")
    before = fake.data_status(COMPANY)["suppliers"]
    client.post(f"/companies/{COMPANY}/data/queue/suppliers")
    pull = fake.fail_pull(COMPANY, "suppliers", status="AuthError")
    assert_valid(oas.load_schema_validator(PLATFORM, "PullOperation"), pull)
    status = client.get(f"/companies/{COMPANY}/dataStatus").json()["suppliers"]
    assert status["currentStatus"] == "AuthError"
    assert status["lastSuccessfulSync"] == before["lastSuccessfulSync"]
    assert client.get(data_path("suppliers")).status_code == 200


def test_queue_rejects_unknown_connection_and_data_type(client: httpx.Client) -> None:
    queue = f"/companies/{COMPANY}/data/queue"
    assert (
        client.post(f"{queue}/bills", params={"connectionId": str(uuid.uuid4())}).status_code == 404
    )
    assert client.post(f"{queue}/notAType").status_code == 400


def test_refresh_all_is_204(fake: FakeCodat, client: httpx.Client) -> None:
    response = client.post(f"/companies/{COMPANY}/data/all")
    assert (response.status_code, response.content) == (204, b"")
    assert [call.status for call in fake.calls_to("/data/all")] == [204]


# --------------------------------------------------------------------------- push operations


def test_push_operations_validate(fake: FakeCodat, client: httpx.Client) -> None:
    errors = [
        {
            "itemId": "NominalCode",
            "message": "NominalCode must not be longer than 10 characters long.",
            "validatorName": "Account",
        }
    ]
    failed_key, ok_key, pending_key = (str(uuid.uuid4()) for _ in range(3))
    fake.add_push_operation(
        COMPANY,
        key=failed_key,
        data_type="bills",
        status="Failed",
        requested=T0 - timedelta(days=2),
        error_message="Push failed for Bill: see validation for more information",
        validation_errors=errors,
    )
    fake.add_push_operation(
        COMPANY, key=ok_key, data_type="bills", status="Success", requested=T0, record_id="bil_1"
    )
    fake.add_push_operation(
        COMPANY,
        key=pending_key,
        data_type="billPayments",
        status="Pending",
        requested=T0 + timedelta(minutes=1),
    )
    one = oas.response_validator(PLATFORM, "/companies/{companyId}/push/{pushOperationKey}", "get")
    failed = client.get(f"/companies/{COMPANY}/push/{failed_key}").json()
    assert_valid(one, failed)
    assert failed["statusCode"] == 400
    assert failed["errorMessage"].startswith("Push failed")
    assert failed["validation"] == {"errors": errors, "warnings": []}
    assert failed["dataConnectionKey"] == CONNECTION
    ok = client.get(f"/companies/{COMPANY}/push/{ok_key}").json()
    assert_valid(one, ok)
    assert ok["changes"] == [
        {"type": "Created", "recordRef": {"id": "bil_1", "dataType": "bills"}, "attachmentId": None}
    ]
    pending = client.get(f"/companies/{COMPANY}/push/{pending_key}").json()
    assert_valid(one, pending)
    assert (pending["statusCode"], "completedOnUtc" in pending) == (202, False)

    listing = client.get(
        f"/companies/{COMPANY}/push",
        params={
            "query": f"requestedOnUtc>{iso(T0 - timedelta(days=1))}",
            "orderBy": "-requestedOnUtc",
        },
    )
    assert listing.status_code == 200, listing.text
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/push", "get"), listing.json()
    )
    assert [op["pushOperationKey"] for op in listing.json()["results"]] == [pending_key, ok_key]
    assert client.get(f"/companies/{COMPANY}/push/{uuid.uuid4()}").status_code == 404


# --------------------------------------------------------------------------- webhook consumers


def test_webhook_consumers(fake: FakeCodat, client: httpx.Client) -> None:
    created = client.post(
        "/webhooks",
        json={"url": "https://example.com/hooks/codat", "eventTypes": ["read.completed"]},
    )
    assert created.status_code == 201, created.text
    consumer = created.json()
    assert_valid(oas.response_validator(PLATFORM, "/webhooks", "post", "201"), consumer)
    assert consumer["disabled"] is False
    tagged = client.post(
        "/webhooks",
        json={
            "url": "https://example.com/hooks/other",
            "eventTypes": ["bills.write.successful", "bills.write.unsuccessful"],
            "disabled": True,
            "companyTags": ["region:uk"],
        },
    ).json()
    listing = client.get("/webhooks").json()
    assert_valid(oas.response_validator(PLATFORM, "/webhooks", "get"), listing)
    assert listing["results"] == [consumer, tagged]
    assert fake.webhook_consumers == [consumer, tagged]
    assert client.post("/webhooks", json={"eventTypes": []}).status_code == 400
    assert client.post("/webhooks", content=b"not json").status_code == 400
    assert client.delete(f"/webhooks/{consumer['id']}").status_code == 204
    assert client.delete(f"/webhooks/{consumer['id']}").status_code == 404
    assert client.get("/webhooks").json()["results"] == [tagged]


# --------------------------------------------------------------------------- faults, auth, calls


def test_429_carries_retry_after(fake: FakeCodat, client: httpx.Client) -> None:
    fake.complete_sync(COMPANY, "bills")
    fake.fail_next("/data/bills", 429, retry_after=7)
    limited = client.get(data_path("bills"))
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert_valid(
        oas.response_validator(V1, "/companies/{companyId}/data/bills", "get", "429"),
        limited.json(),
    )
    assert limited.json()["error"].startswith("You have made too many requests")
    assert client.get(data_path("bills")).status_code == 200


def test_fail_next_counts_matches_and_delays(fake: FakeCodat, client: httpx.Client) -> None:
    fake.complete_sync(COMPANY, "bills")
    fake.fail_next("/data/bills", 503, times=2, delay=0.2)
    assert client.get(f"/companies/{COMPANY}/dataStatus").status_code == 200  # no match
    started = time.monotonic()
    statuses = [client.get(data_path("bills")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert time.monotonic() - started >= 0.4
    fake.fail_next("/push", 500)
    response = client.get(f"/companies/{COMPANY}/push")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert_valid(oas.load_schema_validator(PLATFORM, "ErrorMessage"), response.json())
    fake.fail_next("/data/bills", 500)
    fake.clear_faults()
    assert client.get(data_path("bills")).status_code == 200


def test_delay_all_slows_every_answer(fake: FakeCodat, client: httpx.Client) -> None:
    fake.delay_all = 0.1
    started = time.monotonic()
    client.get(f"/companies/{COMPANY}/dataStatus")
    client.get("/webhooks")
    assert time.monotonic() - started >= 0.2


def test_basic_auth_is_enforced_when_api_key_is_set(fake: FakeCodat, client: httpx.Client) -> None:
    fake.api_key = "k3y-from-the-portal"
    path = f"/companies/{COMPANY}/dataStatus"
    missing = client.get(path)
    assert missing.status_code == 401
    assert_valid(
        oas.response_validator(PLATFORM, path.replace(COMPANY, "{companyId}"), "get", "401"),
        missing.json(),
    )
    wrong = client.get(
        path, headers={"Authorization": "Basic " + base64.b64encode(b"nope").decode()}
    )
    assert wrong.status_code == 401
    raw = client.get(path, headers={"Authorization": "Basic k3y-from-the-portal"})
    assert raw.status_code == 401
    token = base64.b64encode(b"k3y-from-the-portal").decode()
    assert client.get(path, headers={"Authorization": f"Basic {token}"}).status_code == 200


def test_calls_are_recorded_in_order(fake: FakeCodat, client: httpx.Client, clock: Clock) -> None:
    fake.complete_sync(COMPANY, "bills")
    client.get(data_path("bills"), params={"page": 1, "pageSize": 10, "query": "status=Open"})
    client.post(f"/companies/{COMPANY}/data/queue/suppliers")
    client.get(f"/companies/{COMPANY}/push/{uuid.uuid4()}")
    calls = fake.calls
    assert [(c.method, c.status) for c in calls] == [("GET", 200), ("POST", 200), ("GET", 404)]
    assert calls[0].path == data_path("bills")
    assert calls[0].query == {"page": "1", "pageSize": "10", "query": "status=Open"}
    assert calls[0].time == clock()
    assert [c.path for c in fake.calls_to("/data/queue/")] == [
        f"/companies/{COMPANY}/data/queue/suppliers"
    ]
    fake.reset_calls()
    assert fake.calls == []


def test_rate_limit_headers_on_every_answer(fake: FakeCodat, client: httpx.Client) -> None:
    fake.daily_quota = 3
    first = client.get("/webhooks")
    second = client.get(f"/companies/{uuid.uuid4()}/dataStatus")
    assert first.headers["X-Rate-Limit-Limit"] == "3"
    assert (first.headers["X-Rate-Limit-Remaining"], second.headers["X-Rate-Limit-Remaining"]) == (
        "2",
        "1",
    )
    assert first.headers["X-Rate-Limit-Reset"] == "2026-05-04T00:00:00Z"


# --------------------------------------------------------------------------- serving


def test_runs_inside_a_running_event_loop(clock: Clock) -> None:
    fake = FakeCodat(now=clock)
    fake.add_company(COMPANY, CONNECTION)
    fake.put_record(COMPANY, "bills", make_bill("bill-1"))
    fake.complete_sync(COMPANY, "bills")

    async def main() -> int:
        with run_fake_codat(fake) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                answers = await asyncio.gather(*(http.get(data_path("bills")) for _ in range(5)))
        return sum(answer.json()["totalResults"] for answer in answers)

    assert asyncio.run(main()) == 5


def test_state_can_change_while_serving(fake: FakeCodat, client: httpx.Client) -> None:
    fake.complete_sync(COMPANY, "bills")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            fake.put_record(COMPANY, "bills", make_bill(f"w-{i % 50}"))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            assert client.get(data_path("bills"), params={"pageSize": 7}).status_code == 200
    finally:
        stop.set()
        thread.join()
    assert len(fake.records(COMPANY, "bills")) == 50


def test_in_process_asgi_transport(clock: Clock) -> None:
    fake = FakeCodat(now=clock)
    fake.add_company(COMPANY, CONNECTION)
    fake.complete_sync(COMPANY, "bills")

    async def main() -> int:
        transport = httpx.ASGITransport(app=fake.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://codat") as http:
            return (await http.get(data_path("bills"))).status_code

    assert asyncio.run(main()) == 200


def test_server_stops_on_exit() -> None:
    with run_fake_codat(FakeCodat()) as base_url:
        assert httpx.get(f"{base_url}/webhooks").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/webhooks", timeout=1)


def test_reset_forgets_everything_but_the_constructor_settings(clock: Clock) -> None:
    fake = FakeCodat(api_key="key", now=clock, daily_quota=5)
    fake.add_company(COMPANY, CONNECTION)
    fake.fail_next("/", 500)
    fake.delay_all = 1.0
    fake.api_key = "other"
    fake.reset()
    assert (fake.api_key, fake.now, fake.daily_quota, fake.delay_all) == ("key", clock, 5, 0.0)
    assert fake.queued_pulls == {}
    with pytest.raises(KeyError):
        fake.records(COMPANY, "bills")


# -- what Codat does not document, taught to the fake (issue 15) ------------------------------


@pytest.mark.parametrize("fault", ["repeat", "other_company", "other_data_type", "endless"])
def test_broken_next_links_still_validate(
    fake: FakeCodat, client: httpx.Client, fault: str
) -> None:
    for i in range(3):
        fake.put_record(COMPANY, "bills", make_bill(f"bill-{i}"))
    fake.complete_sync(COMPANY, "bills")
    fake.next_link_fault = fault  # type: ignore[assignment]
    body = client.get(data_path("bills"), params={"pageSize": 2, "page": 2}).json()
    assert_valid(oas.response_validator(V1, "/companies/{companyId}/data/bills", "get"), body)
    following = body["_links"]["next"]["href"]
    if fault == "repeat":
        assert following == body["_links"]["current"]["href"]
    elif fault == "endless":
        assert "page=3" in following and len(body["results"]) == 1, "past the last page"
    else:
        assert not following.startswith(data_path("bills")), following


def test_already_in_progress_as_400_and_a_refused_push_query_are_error_messages(
    fake: FakeCodat, client: httpx.Client, clock: Clock
) -> None:
    fake.already_in_progress_status = 400
    queue = f"/companies/{COMPANY}/data/queue/bills"
    assert client.post(queue).status_code == 200
    again = client.post(queue)
    assert again.status_code == 400 and "DatasetAlreadyInProgressException" in again.text
    assert_valid(oas.load_schema_validator(PLATFORM, "ErrorMessage"), again.json())
    fake.refuse_push_query = True
    push = f"/companies/{COMPANY}/push"
    refused = client.get(push, params={"query": "requestedOnUtc>2026-01-01T00:00:00Z"})
    assert refused.status_code == 400
    assert_valid(oas.load_schema_validator(PLATFORM, "ErrorMessage"), refused.json())
    listed = client.get(push, params={"orderBy": "-requestedOnUtc"})
    assert listed.status_code == 200
    assert_valid(
        oas.response_validator(PLATFORM, "/companies/{companyId}/push", "get"), listed.json()
    )
