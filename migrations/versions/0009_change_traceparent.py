"""changes.traceparent: a notification continues the trace of the work that made it

With tracing on (app/tracing.py), a change keeps the W3C traceparent of the span that
recorded it (the worker's span for the event), and the notifier's span for each
delivery is its child: one trace runs from Codat's webhook to the platform's endpoint.
Nullable: NULL when tracing is off, and for every change recorded before.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
