"""Indexes for 100,000 companies (bench.scale, issue 21)

- companies (last_reconciled_at, id): the sweep's reconcile share is a range of the
  companies reconciled longest ago, not a scan of every company;
- data_type_states (last_pulled_at): the sweep's overdue data is a range of old pulls,
  not a scan of every company's every type;
- records (company_id, data_type, modified_date, record_id) in place of (company_id,
  data_type, modified_date): a page of the local copy is read in order from its cursor,
  so a page deep into 50,000 bills costs what the first page costs. The old index is a
  prefix of the new one, so nothing that used it loses.

On a large database the records index takes a while to build, and the table takes no
writes meanwhile: run it when pulls may wait.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_companies_last_reconciled_at_id", "companies", ["last_reconciled_at", "id"])
    op.create_index("ix_data_type_states_last_pulled_at", "data_type_states", ["last_pulled_at"])
    op.create_index(
        "ix_records_company_type_modified_id",
        "records",
        ["company_id", "data_type", "modified_date", "record_id"],
    )
    op.drop_index("ix_records_company_id_data_type_modified_date", table_name="records")


def downgrade() -> None:
    op.create_index(
        "ix_records_company_id_data_type_modified_date",
        "records",
        ["company_id", "data_type", "modified_date"],
    )
    op.drop_index("ix_records_company_type_modified_id", table_name="records")
    op.drop_index("ix_data_type_states_last_pulled_at", table_name="data_type_states")
    op.drop_index("ix_companies_last_reconciled_at_id", table_name="companies")
