"""companies: the connection and company lifecycle (issue 15)

`needs_reauth` and `reauth_reason`: a company whose connection was disconnected, failed,
deleted or deauthorised (or whose read ended in AuthError) gets no refresh, pull or
reconcile until it is linked again; `link_url` is where its SMB does that. `tags` keeps
Codat's `referenceCompany.tags`. `deleted_at`: when company.deleted came, so that
`prune` removes the local copy after the retention period. Every existing company is
not blocked (false), with the rest NULL.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("needs_reauth", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("reauth_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("link_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(
            sa.Column(
                "tags",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("tags")
        batch_op.drop_column("link_url")
        batch_op.drop_column("reauth_reason")
        batch_op.drop_column("needs_reauth")
