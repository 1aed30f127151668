"""Every change to what a task's status shows is announced to every replica (PostgreSQL)

A trigger, not the application, sends the NOTIFY: a change made by any process, an
operator's SQL included, reaches every replica's status cache and waiters.

Revision ID: 3c1e5b7f9a20
Revises: dca5822a98c9
Create Date: 2026-11-22 04:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3c1e5b7f9a20"
down_revision: str | None = "dca5822a98c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns a status object is made of (app/reads/loader.py TaskStatus); json has no equality, so as text.
STATUS_COLUMNS = (
    "{r}.api_key_id, {r}.state, {r}.model, {r}.image_urls::text, {r}.stored_images::text, "
    "{r}.fail_msg, {r}.cost_time_ms, {r}.created_at, {r}.updated_at, {r}.completed_at"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: each process watches the file itself (PRAGMA data_version)
    op.execute(
        """
        CREATE FUNCTION imagehook_notify_task_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('imagehook_tasks', OLD.id);
            RETURN NULL;
        END $$
        """
    )
    changed = f"ROW({STATUS_COLUMNS.format(r='OLD')}) IS DISTINCT FROM ROW({STATUS_COLUMNS.format(r='NEW')})"
    op.execute(
        f"CREATE TRIGGER tasks_status_changed AFTER UPDATE ON tasks FOR EACH ROW WHEN ({changed}) "
        "EXECUTE FUNCTION imagehook_notify_task_change()"
    )
    op.execute(
        "CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks FOR EACH ROW "
        "EXECUTE FUNCTION imagehook_notify_task_change()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER tasks_deleted ON tasks")
    op.execute("DROP TRIGGER tasks_status_changed ON tasks")
    op.execute("DROP FUNCTION imagehook_notify_task_change()")
