"""What the sandbox holds: the company of the bundled sample events, with a few records of
every data type their initial read names, and the push operations their writes refer to.

Why from the samples: `send-test-event --sample NAME` sends them unchanged, so the company,
connection and push operation keys the service then asks the sandbox about must be these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.sandbox.fake_codat import (
    FakeCodat,
    make_account,
    make_bank_account,
    make_bill,
    make_bill_credit_note,
    make_bill_payment,
    make_payment_method,
    make_supplier,
    make_tax_rate,
    make_tracking_category,
    parse_datetime,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

_SUPPLIERS = {
    "sup-1": "Kelly's Industrial Supplies",
    "sup-2": "Northwind Office Furniture",
    "sup-3": "Brightside Cleaning Co",
}
# (bill id, supplier, amount including tax, status)
_BILLS = [
    ("bill-1", "sup-1", 120.0, "Open"),
    ("bill-2", "sup-1", 480.0, "Open"),
    ("bill-3", "sup-2", 1_250.0, "Paid"),
    ("bill-4", "sup-2", 96.0, "PartiallyPaid"),
    ("bill-5", "sup-3", 300.0, "Open"),
    ("bill-6", "sup-3", 60.0, "Draft"),
]

# The webhook's `type` (Codat-Platform.json webhooks) -> the push operation's pushChangeType.
_CHANGE_TYPES = {"Create": "Created", "Update": "Modified", "Delete": "Deleted"}


@dataclass(frozen=True)
class DemoCompany:
    """The company the samples name, and what the sandbox seeded for it."""

    id: str
    name: str
    connection_id: str
    data_types: tuple[str, ...]


def sample_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return body


def demo_company() -> DemoCompany:
    """The company, connection and data types of the sample initial read."""
    payload = sample_body("read.completed.initial")["payload"]
    entries = payload["dataTypes"]
    return DemoCompany(
        id=payload["referenceCompany"]["id"],
        name=payload["referenceCompany"]["name"],
        connection_id=entries[0]["connectionId"],
        data_types=tuple(entry["dataType"] for entry in entries),
    )


def seed(fake: FakeCodat) -> DemoCompany:
    """Fill `fake` with the demo company, every data type synced, and the samples' pushes."""
    company = demo_company()
    fake.add_company(company.id, company.connection_id, name=company.name)
    start = fake.now() - timedelta(days=1)
    records = [
        *(("suppliers", make_supplier(i, name=name)) for i, name in _SUPPLIERS.items()),
        *(
            (
                "bills",
                make_bill(
                    bill_id,
                    supplier_id=supplier,
                    supplier_name=_SUPPLIERS[supplier],
                    amount=amount,
                    status=status,
                ),
            )
            for bill_id, supplier, amount, status in _BILLS
        ),
        ("billPayments", make_bill_payment("pay-1", bill_id="bill-3", amount=1_250.0)),
        ("billPayments", make_bill_payment("pay-2", bill_id="bill-4", amount=40.0)),
        ("billCreditNotes", make_bill_credit_note("credit-1", supplier_id="sup-2")),
        ("paymentMethods", make_payment_method("pm-transfer")),
        ("paymentMethods", make_payment_method("pm-card", name="Card", method_type="CreditCard")),
        ("taxRates", make_tax_rate("tax-std")),
        ("taxRates", make_tax_rate("tax-zero", name="Zero rated", rate=0.0)),
        ("trackingCategories", make_tracking_category("dept-ops", name="Operations")),
        ("chartOfAccounts", make_account("acc-expenses")),
        ("chartOfAccounts", make_account("acc-payable", name="Payables", account_type="Liability")),
        (
            "chartOfAccounts",
            make_account("bank-1", name="Current", account_type="Asset", is_bank_account=True),
        ),
        ("bankAccounts", make_bank_account("bank-1")),
    ]
    for i, (data_type, record) in enumerate(records):
        fake.put_record(company.id, data_type, record, modified=start + timedelta(minutes=i))
    for data_type in company.data_types:
        fake.complete_sync(company.id, data_type)
    for path in sorted(SAMPLES.glob("*.write.*.json")):
        _add_sample_push(fake, sample_body(path.stem), fake.now())
    return company


def _add_sample_push(fake: FakeCodat, body: dict[str, Any], now: datetime) -> None:
    """The push operation a write sample reports on, so that its look-up finds it."""
    payload = body["payload"]
    prefix = body["eventType"].split(".")[0]
    failed = payload.get("status") == "Failed"
    record = payload.get("record")
    fake.add_push_operation(
        payload["referenceCompany"]["id"],
        key=payload["id"],
        # `bill.write.*` is Codat's get-started page's name for the `bills` data type.
        data_type="bills" if prefix == "bill" else prefix,
        status="Failed" if failed else "Success",
        requested=parse_datetime(payload.get("requestedOnDate") or "") or now,
        completed=parse_datetime(payload.get("completedOnDate") or "") or now,
        connection_id=payload.get("connectionId"),
        record_id=record.get("id") if isinstance(record, dict) else None,
        change_type=_CHANGE_TYPES.get(payload.get("type"), "Unknown"),
        error_message="The supplier on this bill is archived." if failed else None,
        validation_errors=(
            [{"itemId": "SupplierRef", "message": "Supplier is archived", "validatorName": "Bill"}]
            if failed
            else None
        ),
    )
