"""What Codat does not promise (issue 15): a pull's paging error, Codat's own quota count

`data_type_states.last_pull_error`: why the last pull stopped short (a next page link that
did not advance, or that pointed at another company or data type), shown until a pull
ends well. `rate_limit_state.quota_reset_at` and `quota_read_at`: Codat's
`X-Rate-Limit-Reset` header and when the `X-Rate-Limit-*` headers were last read into
the quota. All nullable: NULL until first seen.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_type_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_pull_error", sa.Text(), nullable=True))
    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quota_reset_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("quota_read_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_limit_state", schema=None) as batch_op:
        batch_op.drop_column("quota_read_at")
        batch_op.drop_column("quota_reset_at")
    with op.batch_alter_table("data_type_states", schema=None) as batch_op:
        batch_op.drop_column("last_pull_error")
