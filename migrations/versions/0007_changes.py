"""changes: the outbox of what changed, and its deliveries to internal endpoints

`changes` is written in the transaction of the state change it describes. On
PostgreSQL each row keeps its transaction id (`tx`, `txid_current()`), so the feed can
wait for every earlier transaction to end before handing a change out, and an INSERT
notifies `codat_changes` (one notification per statement) to wake long-polling readers.
SQLite has one writer at a time: `tx` stays 0 and the feed orders by `seq` alone.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# app.changes.feed.CHANNEL; spelled out here, as a migration must not change later.
CHANNEL = "codat_changes"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "changes",
        sa.Column("seq", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "tx",
            sa.BigInteger(),
            server_default=sa.text("txid_current()") if postgres else sa.text("0"),
            nullable=False,
        ),
        sa.Column("change_type", sa.String(length=64), nullable=False),
        sa.Column("company_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
        sa.UniqueConstraint("id", name=op.f("uq_changes_id")),
    )
    op.create_index("ix_changes_tx_seq", "changes", ["tx", "seq"])
    op.create_index("ix_changes_created_at", "changes", ["created_at"])
    op.create_table(
        "deliveries",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.String(length=40), nullable=False),
        sa.Column("change_type", sa.String(length=64), nullable=False),
        sa.Column("company_id", sa.String(length=255), nullable=True),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_status_created_at", "deliveries", ["status", "created_at"])
    op.create_index("ix_deliveries_change_seq", "deliveries", ["change_seq"])
    if postgres:
        op.execute(
            f"""
            CREATE FUNCTION notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{CHANNEL}', '');
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER changes_notify AFTER INSERT ON changes "
            "FOR EACH STATEMENT EXECUTE FUNCTION notify_changes()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS changes_notify ON changes")
        op.execute("DROP FUNCTION IF EXISTS notify_changes()")
    op.drop_table("deliveries")
    op.drop_table("changes")
