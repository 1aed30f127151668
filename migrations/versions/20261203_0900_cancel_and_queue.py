"""Cancel and deadlines, and the place of each task waiting to be sent

- `tasks.cancel_at`: the moment a task is canceled unless finished by then (`Cancel-After`). The
  sweeper finds such tasks through `next_check_at`, which never falls past it, so no index of its own.
- `ix_tasks_send_queue`: the tasks not yet sent upstream and not finished (a finished task has no
  `next_check_at`), in the order the sweeper sends them, so a queued task's place is counted from it.
- The status triggers (20261122_0420_notify_task_changes.py on PostgreSQL, 20261202_0705_task_changes.py
  on SQLite) also watch `fail_code` (the status's `failCode`) and `upstream_id` (once set, the task has
  left the queue and its status no longer shows a place in it).

On SQLite the downgrade rebuilds the tasks table (batch mode), which drops its triggers: they are made again.

Revision ID: a3eeec6733e5
Revises: 4c8e1f2a9b37
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3eeec6733e5"
down_revision: str | None = "4c8e1f2a9b37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns a status object is made of (app/reads/loader.py TaskStatus), before and after this revision.
PREVIOUS_STATUS_COLUMNS = (
    "api_key_id",
    "state",
    "model",
    "image_urls",
    "stored_images",
    "fail_msg",
    "cost_time_ms",
    "created_at",
    "updated_at",
    "completed_at",
)
STATUS_COLUMNS = (*PREVIOUS_STATUS_COLUMNS, "fail_code", "upstream_id")
JSON_COLUMNS = ("image_urls", "stored_images")  # PostgreSQL's json has no equality: compared as text
QUEUE_INDEX = "ix_tasks_send_queue"
IN_LINE = "upstream_id IS NULL AND next_check_at IS NOT NULL"
RECORD_OLD_ID = "BEGIN INSERT INTO task_changes (task_id) VALUES (OLD.id); END"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("cancel_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        QUEUE_INDEX,
        "tasks",
        ["provider", "next_check_at", "created_at", "id"],
        sqlite_where=sa.text(IN_LINE),
        postgresql_where=sa.text(IN_LINE),
    )
    op.execute(drop_status_trigger())
    op.execute(create_status_trigger(STATUS_COLUMNS))


def downgrade() -> None:
    op.drop_index(QUEUE_INDEX, table_name="tasks")
    op.execute(drop_status_trigger())
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("cancel_at")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS tasks_deleted")  # gone with the rebuilt table
        op.execute(f"CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks FOR EACH ROW {RECORD_OLD_ID}")
    op.execute(create_status_trigger(PREVIOUS_STATUS_COLUMNS))


def drop_status_trigger() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "DROP TRIGGER IF EXISTS tasks_status_changed ON tasks"
    return "DROP TRIGGER IF EXISTS tasks_status_changed"


def create_status_trigger(columns: Sequence[str]) -> str:
    """The trigger that announces (PostgreSQL: NOTIFY) or records (SQLite: task_changes) a change to `columns`."""
    if op.get_bind().dialect.name == "postgresql":
        old, new = (", ".join(_pg_value(row, column) for column in columns) for row in ("OLD", "NEW"))
        return (
            f"CREATE TRIGGER tasks_status_changed AFTER UPDATE ON tasks FOR EACH ROW "
            f"WHEN (ROW({old}) IS DISTINCT FROM ROW({new})) EXECUTE FUNCTION imagehook_notify_task_change()"
        )
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)
    return f"CREATE TRIGGER tasks_status_changed AFTER UPDATE ON tasks FOR EACH ROW WHEN {changed} {RECORD_OLD_ID}"


def _pg_value(row: str, column: str) -> str:
    return f"{row}.{column}::text" if column in JSON_COLUMNS else f"{row}.{column}"
