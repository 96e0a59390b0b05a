"""sweep rolling window: the sweep's spending by hour replaces the calendar-day counter

The sweep's share was counted per UTC day and paced by the hour of that day, so a day
started early split the work into sweeps whose overhead spent the share first. Its
spending is now kept by the hour for the last 24 hours. The old counter is dropped, not
carried over: at worst the first day after the upgrade spends one share twice.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_spent", JSON, nullable=True))
        batch_op.drop_column("sweep_calls")
        batch_op.drop_column("sweep_day")


def downgrade() -> None:
    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_day", sa.String(length=10), nullable=True))
        batch_op.add_column(
            sa.Column("sweep_calls", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.drop_column("sweep_spent")
