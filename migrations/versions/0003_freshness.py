"""freshness: refresh and catch-up bookkeeping, the sweep's budget, events by status

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_reconciled_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("write_catch_ups", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("data_type_states", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_refresh_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("refresh_retries", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("catch_ups", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_day", sa.String(length=10), nullable=True))
        batch_op.add_column(
            sa.Column("sweep_calls", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_events_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_status_id")

    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.drop_column("sweep_calls")
        batch_op.drop_column("sweep_day")

    with op.batch_alter_table("data_type_states", schema=None) as batch_op:
        batch_op.drop_column("catch_ups")
        batch_op.drop_column("refresh_retries")
        batch_op.drop_column("last_refresh_requested_at")

    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_column("write_catch_ups")
        batch_op.drop_column("last_reconciled_at")
