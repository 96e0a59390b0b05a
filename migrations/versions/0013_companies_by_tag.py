"""Companies by tag: a GIN index on companies.tags (bench.scale, issue 21)

A platform keeps its own customer id in Codat's tags and finds the company by it
(`GET /api/v1/companies?tag=customer:...`, the dashboard's filter). As `tags->>'key' =
value` that read every company's tags; as a containment (`tags @> '{"key": "value"}'`,
app/api/queries.tag_clauses) this index answers it on PostgreSQL. SQLite keeps a plain
index on the column, which its queries do not use.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_companies_tags",
        "companies",
        ["tags"],
        postgresql_using="gin",
        postgresql_ops={"tags": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_companies_tags", table_name="companies")
