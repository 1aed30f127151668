"""Keep results and govern spend: stored files, credits and reserves, key limits, upstream sends

Revision ID: dca5822a98c9
Revises: f438b41a8f96
Create Date: 2026-11-22 02:02:23.819614
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dca5822a98c9"
down_revision: str | None = "f438b41a8f96"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "stored_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("storage_key", sa.String(length=200), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_files")),
        sa.UniqueConstraint("task_id", "n", name=op.f("uq_stored_files_task_id")),
    )
    op.create_index(op.f("ix_stored_files_next_attempt_at"), "stored_files", ["next_attempt_at"], unique=False)
    op.create_table(
        "upstream_sends",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_sends")),
    )
    op.create_index("ix_upstream_sends_provider_at", "upstream_sends", ["provider", "at"], unique=False)
    op.add_column("api_keys", sa.Column("rate_per_minute", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("max_in_flight", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("daily_credit_budget", sa.Double(), nullable=True))
    op.add_column("api_keys", sa.Column("monthly_credit_budget", sa.Double(), nullable=True))
    op.add_column("tasks", sa.Column("credits", sa.Double(), nullable=True))
    op.add_column("tasks", sa.Column("stored_images", sa.JSON(), nullable=False, server_default="[]"))
    # Existing tasks reserved nothing; the placeholder default fills them without a table rebuild.
    op.add_column("tasks", sa.Column("credit_reserve", sa.Double(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("tasks", "credit_reserve", server_default=None)
        op.alter_column("tasks", "stored_images", server_default=None)


def downgrade() -> None:

    op.drop_column("tasks", "credit_reserve")
    op.drop_column("tasks", "stored_images")
    op.drop_column("tasks", "credits")
    op.drop_column("api_keys", "monthly_credit_budget")
    op.drop_column("api_keys", "daily_credit_budget")
    op.drop_column("api_keys", "max_in_flight")
    op.drop_column("api_keys", "rate_per_minute")
    op.drop_index("ix_upstream_sends_provider_at", table_name="upstream_sends")
    op.drop_table("upstream_sends")
    op.drop_index(op.f("ix_stored_files_next_attempt_at"), table_name="stored_files")
    op.drop_table("stored_files")
