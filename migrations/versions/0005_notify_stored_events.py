"""notify stored events: PostgreSQL wakes listening workers when an event is stored

Without it a worker in its own process learns of a new event at its next poll
(`WORKER_POLL_INTERVAL`). One notification per INSERT statement, not per row: the
receiver's group commit inserts many rows in one statement. SQLite has no NOTIFY (and
runs one process, whose receiver wakes its embedded worker directly): nothing to do.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.processing.notify.CHANNEL; spelled out here, as a migration must not change later.
CHANNEL = "codat_work_due"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION notify_work_due() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER webhook_events_notify_work_due AFTER INSERT ON webhook_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_work_due()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS webhook_events_notify_work_due ON webhook_events")
    op.execute("DROP FUNCTION IF EXISTS notify_work_due()")
