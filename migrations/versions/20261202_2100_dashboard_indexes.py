"""The operator dashboard: every client's tasks newest first, and one task's webhooks

Revision ID: 4c8e1f2a9b37
Revises: 9b4e2c7d5a18
Create Date: 2026-12-02 21:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "4c8e1f2a9b37"
down_revision: str | None = "9b4e2c7d5a18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_created_at_id", "tasks", ["created_at", "id"])
    op.create_index("ix_webhook_deliveries_task_id", "webhook_deliveries", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_task_id", table_name="webhook_deliveries")
    op.drop_index("ix_tasks_created_at_id", table_name="tasks")
