"""Every change to what a task's status shows is recorded for every process's watcher (SQLite)

SQLite has no NOTIFY: a process learns only that something committed (PRAGMA data_version).
Triggers record which tasks each commit changed in task_changes, so a watcher drops just those
tasks' cached statuses; the same triggers catch a change by any process, an operator's SQL included.

Only the newest RETAINED rows are kept, pruned by the writer itself as it appends: one indexed
delete of about one row per change, with no clock, no cleanup job, and nothing to know about
how many processes watch or where each one is. A watcher that falls further behind than that
sees a gap in seq and treats every cached status as changed.

A later migration that rebuilds the tasks table (batch mode) drops these triggers with it and
must create them again.

Revision ID: 7d2f4a9c1e36
Revises: 3c1e5b7f9a20
Create Date: 2026-12-02 07:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2f4a9c1e36"
down_revision: str | None = "3c1e5b7f9a20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Far more changes than commit in one watcher poll (app/reads/watch.py FRESHNESS_POLL_S) under any load.
RETAINED = 10_000
# The columns a status object is made of (app/reads/loader.py TaskStatus).
STATUS_COLUMNS = (
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
RECORD_OLD_ID = "BEGIN INSERT INTO task_changes (task_id) VALUES (OLD.id); END"


def upgrade() -> None:
    op.create_table(
        "task_changes",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_task_changes")),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL: a trigger sends NOTIFYs (20261122_0420_notify_task_changes.py)
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in STATUS_COLUMNS)
    op.execute(f"CREATE TRIGGER tasks_status_changed AFTER UPDATE ON tasks FOR EACH ROW WHEN {changed} {RECORD_OLD_ID}")
    # No trigger on insert: only a task that exists is ever cached.
    op.execute(f"CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks FOR EACH ROW {RECORD_OLD_ID}")
    op.execute(
        "CREATE TRIGGER task_changes_pruned AFTER INSERT ON task_changes FOR EACH ROW "
        f"BEGIN DELETE FROM task_changes WHERE seq <= NEW.seq - {RETAINED}; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER tasks_deleted")
        op.execute("DROP TRIGGER tasks_status_changed")
    op.drop_table("task_changes")  # and its own trigger with it
