"""Companies and their payables data in the fake Codat: what the local copy must equal."""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.sandbox.fake_codat import FakeCodat, make_bill, make_bill_payment, make_supplier

DATA_TYPES = ("bills", "suppliers", "billPayments")


def _record(data_type: str, record_id: str, rng: random.Random) -> dict[str, Any]:
    amount = round(rng.uniform(10, 5000), 2)
    if data_type == "bills":
        return make_bill(record_id, amount=amount)
    if data_type == "suppliers":
        return make_supplier(record_id, name=f"Supplier {rng.randrange(10**6)}")
    if data_type == "billPayments":
        return make_bill_payment(record_id, amount=amount)
    raise ValueError(data_type)


@dataclass
class World:
    fake: FakeCodat
    rng: random.Random
    companies: dict[str, str] = field(default_factory=dict)  # company id -> connection id
    data_types: tuple[str, ...] = DATA_TYPES
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    changes: int = 0

    def add_companies(self, count: int, records_per_type: int) -> list[str]:
        added = []
        for _ in range(count):
            company, connection = str(uuid.uuid4()), str(uuid.uuid4())
            self.fake.add_company(company, connection)
            self.companies[company] = connection
            for data_type in self.data_types:
                self.add_records(company, data_type, records_per_type)
                self.fake.complete_sync(company, data_type)
            added.append(company)
        return added

    def add_records(self, company: str, data_type: str, count: int) -> None:
        for _ in range(count):
            record_id = f"{data_type}-{next(self._ids):05}"
            self.fake.put_record(company, data_type, _record(data_type, record_id, self.rng))
            self.changes += 1

    def change(self, company: str, data_type: str, *, new: int, updated: int, deleted: int) -> None:
        """A later sync in Codat: new records, changed ones, deletions; then the sync ends."""
        existing = [
            r["id"] for r in self.fake.records(company, data_type) if not r["metadata"]["isDeleted"]
        ]
        self.rng.shuffle(existing)
        for record_id in existing[:updated]:
            self.fake.put_record(company, data_type, _record(data_type, record_id, self.rng))
            self.changes += 1
        for record_id in existing[updated : updated + deleted]:
            self.fake.delete_record(company, data_type, record_id)
            self.changes += 1
        self.add_records(company, data_type, new)
        self.fake.complete_sync(company, data_type)

    def record_count(self) -> int:
        return sum(
            len(self.fake.records(company, data_type))
            for company in self.companies
            for data_type in self.data_types
        )
