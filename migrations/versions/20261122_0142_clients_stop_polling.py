"""Clients stop polling: idempotency keys, the webhook outbox, feed and listing indexes

Revision ID: f438b41a8f96
Revises: 8a419cd2cba3
Create Date: 2026-11-22 01:42:11.865398
"""

import base64
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f438b41a8f96"
down_revision: str | None = "8a419cd2cba3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name=op.f("fk_idempotency_keys_api_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("api_key_id", "key", name=op.f("uq_idempotency_keys_api_key_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("give_up_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_webhook_deliveries_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_webhook_deliveries_webhook_id")),
    )
    op.create_index("ix_webhook_deliveries_api_key_id_id", "webhook_deliveries", ["api_key_id", "id"], unique=False)
    op.create_index(
        op.f("ix_webhook_deliveries_next_attempt_at"), "webhook_deliveries", ["next_attempt_at"], unique=False
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.String(length=2048), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["webhook_deliveries.id"], name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(op.f("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"], unique=False)
    # Existing keys get a webhook secret of their own; existing events the owner of their task.
    # No rebuild of api_keys (SQLite cannot rebuild a table others reference while foreign
    # keys are enforced): the column starts with a placeholder default, then is filled.
    op.add_column("api_keys", sa.Column("webhook_secret", sa.String(length=64), nullable=False, server_default=""))
    op.add_column("api_keys", sa.Column("previous_webhook_secret", sa.String(length=64), nullable=True))
    op.add_column("api_keys", sa.Column("webhook_secret_rotated_at", sa.DateTime(timezone=True), nullable=True))
    connection = op.get_bind()
    for (key_id,) in connection.execute(sa.text("SELECT id FROM api_keys")).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        connection.execute(sa.text("UPDATE api_keys SET webhook_secret = :s WHERE id = :i"), {"s": secret, "i": key_id})
    if connection.dialect.name != "sqlite":
        op.alter_column("api_keys", "webhook_secret", server_default=None)
    op.add_column("task_events", sa.Column("api_key_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE task_events SET api_key_id = (SELECT tasks.api_key_id FROM tasks WHERE tasks.id = task_events.task_id)"
    )
    op.execute("DELETE FROM task_events WHERE api_key_id IS NULL")
    with op.batch_alter_table("task_events") as batch:
        batch.alter_column("api_key_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f("fk_task_events_api_key_id_api_keys"), "api_keys", ["api_key_id"], ["id"])
    op.create_index("ix_task_events_api_key_id_id", "task_events", ["api_key_id", "id"], unique=False)
    op.add_column("tasks", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.drop_index(op.f("ix_tasks_api_key_id"), table_name="tasks")
    op.create_index("ix_tasks_api_key_id_created_at_id", "tasks", ["api_key_id", "created_at", "id"], unique=False)


def downgrade() -> None:

    op.drop_index("ix_tasks_api_key_id_created_at_id", table_name="tasks")
    op.create_index(op.f("ix_tasks_api_key_id"), "tasks", ["api_key_id"], unique=False)
    op.drop_column("tasks", "webhook_url")
    op.drop_index("ix_task_events_api_key_id_id", table_name="task_events")
    with op.batch_alter_table("task_events") as batch:
        batch.drop_constraint(op.f("fk_task_events_api_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("api_key_id")
    op.drop_column("api_keys", "webhook_secret_rotated_at")
    op.drop_column("api_keys", "previous_webhook_secret")
    op.drop_column("api_keys", "webhook_secret")
    op.drop_index(op.f("ix_webhook_attempts_delivery_id"), table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index(op.f("ix_webhook_deliveries_next_attempt_at"), table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_api_key_id_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("idempotency_keys")
