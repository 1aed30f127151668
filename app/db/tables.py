"""Tables. The schema itself is created only by the Alembic migrations in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both SQLite (which drops the offset) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON, list[int]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the key: keys are 256-bit random, so a slow password hash adds nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # Signs outgoing webhooks (Standard Webhooks `whsec_...`), so it is kept, not hashed.
    webhook_secret: Mapped[str] = mapped_column(String(64))
    # After a rotation both secrets sign for a while, so receivers can switch without loss.
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(64))
    webhook_secret_rotated_at: Mapped[datetime | None]
    # Limits; NULL means unlimited. Enforced at submit against this table (see app/tasks/limits.py).
    rate_per_minute: Mapped[int | None]
    max_in_flight: Mapped[int | None]
    daily_credit_budget: Mapped[float | None]
    monthly_credit_budget: Mapped[float | None]
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # An expired key is refused like a revoked one.
    expires_at: Mapped[datetime | None]
    # Kept to within a minute: each process writes the keys it saw once a minute (app/keys.py).
    last_used_at: Mapped[datetime | None]


# Not yet sent upstream, and not finished (a finished task has no next_check_at): the tasks in line for a create.
IN_LINE = "upstream_id IS NULL AND next_check_at IS NOT NULL"


class Task(Base):
    __tablename__ = "tasks"
    # Listing: a client's tasks newest first, paged by (created_at, id); the dashboard: everyone's.
    # The send queue: each provider's tasks in line, in the order the sweeper sends them (a place is counted here).
    __table_args__ = (
        Index("ix_tasks_api_key_id_created_at_id", "api_key_id", "created_at", "id"),
        Index("ix_tasks_created_at_id", "created_at", "id"),
        Index(
            "ix_tasks_send_queue",
            "provider",
            "next_check_at",
            "created_at",
            "id",
            sqlite_where=text(IN_LINE),
            postgresql_where=text(IN_LINE),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    provider: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(100))
    request: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(20))
    upstream_id: Mapped[str | None] = mapped_column(String(100), index=True)
    image_urls: Mapped[list[str]] = mapped_column(default=list)  # as the provider gave them
    # Indexes of image_urls already copied to imagehook's storage (served from our own URL).
    stored_images: Mapped[list[int]] = mapped_column(default=list)
    fail_code: Mapped[str | None] = mapped_column(String(20))
    fail_msg: Mapped[str | None] = mapped_column(Text)
    cost_time_ms: Mapped[int | None]
    # Credits the provider reported; until then `credit_reserve` (an estimate) counts against budgets.
    credits: Mapped[float | None]
    credit_reserve: Mapped[float] = mapped_column(default=0.0)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    submit_attempts: Mapped[int] = mapped_column(default=0)
    check_attempts: Mapped[int] = mapped_column(default=0)
    # When the sweeper should next look at this task; NULL once terminal, so the
    # sweeper's index scan never touches finished tasks however many there are.
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    # Cancel-After: canceled at this moment unless finished by then. next_check_at never falls past it.
    cancel_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class TaskEvent(Base):
    """A task's history: every state change, and every update that was refused."""

    __tablename__ = "task_events"
    __table_args__ = (
        Index("ix_task_events_task_id_id", "task_id", "id"),
        # The catch-up feed: one client's changes in order.
        Index("ix_task_events_api_key_id_id", "api_key_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CallbackEvent(Base):
    """The callback inbox: every request to a callback URL, raw, with its verdict."""

    __tablename__ = "callback_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime]
    headers: Mapped[dict[str, Any]]
    body: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(40))


class IdempotencyKey(Base):
    """An Idempotency-Key a client sent with a generate request, and the task it made."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """The outbox: one row per webhook to send, written with the state change that caused it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_api_key_id_id", "api_key_id", "id"),
        Index("ix_webhook_deliveries_task_id", "task_id"),  # a task's webhooks, on the dashboard
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(40), unique=True)  # stable across retries
    task_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed | gone
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)  # NULL once settled
    give_up_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    attempt_log: Mapped[list[WebhookAttempt]] = relationship(order_by="WebhookAttempt.id", viewonly=True)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    at: Mapped[datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    # The receiver's answer, cut short: enough to debug, never a way to fill our disk.
    response_body: Mapped[str | None] = mapped_column(String(2048))
    duration_ms: Mapped[int]


class StoredFile(Base):
    """A result image to copy to imagehook's own storage before the provider's URL expires."""

    __tablename__ = "stored_files"
    __table_args__ = (UniqueConstraint("task_id", "n"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40))
    n: Mapped[int]
    source_url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # pending | stored | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)  # NULL once settled
    storage_key: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    stored_at: Mapped[datetime | None]


class UpstreamSend(Base):
    """One create call to a provider: the shared window behind the upstream create-rate throttle."""

    __tablename__ = "upstream_sends"
    __table_args__ = (Index("ix_upstream_sends_provider_at", "provider", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]


class TaskChange(Base):
    """On SQLite, the tasks whose status each commit changed, in commit order: written by triggers
    (migrations/versions/20261202_0705_task_changes.py), read by every process's watcher
    (app/reads/watch.py). PostgreSQL announces changes by NOTIFY instead, so there it stays empty."""

    __tablename__ = "task_changes"
    # Never reuses a seq, even once every row is pruned: a watcher's position stays meaningful.
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40))
