"""Queries over the tables. None of them commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.tables import ApiKey, IdempotencyKey, Task, TaskEvent
from app.tasks.domain import TERMINAL, State

CHANGED_TASKS = "changed_tasks"  # session.info key: task ids whose status this transaction changed
AFTER_COMMIT = "after_commit"  # session.info key: what to call once this transaction has committed


async def find_api_key(session: AsyncSession, key_hash: str, now: datetime) -> tuple[int, datetime | None] | None:
    """(id, expires_at) of the key with this hash, unless it is revoked or has expired."""
    stmt = select(ApiKey.id, ApiKey.expires_at).where(
        ApiKey.key_hash == key_hash,
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    )
    found = (await session.execute(stmt)).one_or_none()
    return None if found is None else (found[0], found[1])


async def get_idempotency_key(session: AsyncSession, api_key_id: int, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record_submission(
    session: AsyncSession, task_id: str, upstream_id: str, now: datetime, next_check_at: datetime
) -> tuple[str, State] | None:
    """Store the upstream id; a task an early callback already finished stays finished. Returns the
    other upstream id an early callback had bound the task to, if it named a different one, and the
    state it left the task in."""
    bound_stmt = select(Task.upstream_id, Task.state).where(Task.id == task_id).with_for_update()
    bound, state = (await session.execute(bound_stmt)).one_or_none() or (None, None)
    stmt = (
        update(Task)
        .where(Task.id == task_id)
        .values(
            upstream_id=upstream_id,
            submitted_at=now,
            submit_attempts=Task.submit_attempts + 1,
            next_check_at=case((Task.state.in_([s.value for s in TERMINAL]), None), else_=next_check_at),
        )
    )
    await session.execute(stmt.execution_options(synchronize_session=False))
    return (bound, State(state)) if bound not in (None, upstream_id) else None


async def is_unsent(session: AsyncSession, task_id: str) -> bool:
    """The task is still to be sent upstream: not sent, and not finished (by a cancel, say)."""
    stmt = select(Task.id).where(
        Task.id == task_id, Task.upstream_id.is_(None), Task.state.not_in([s.value for s in TERMINAL])
    )
    return (await session.execute(stmt)).first() is not None


async def reschedule(session: AsyncSession, task_id: str, next_check_at: datetime, **counters: int) -> None:
    """Set when the sweeper looks next; never revives a terminal task."""
    stmt = (
        update(Task)
        .where(Task.id == task_id, Task.state.not_in([s.value for s in TERMINAL]))
        .values(next_check_at=next_check_at, **counters)
    )
    await session.execute(stmt.execution_options(synchronize_session=False))


async def claim(
    session: AsyncSession,
    due: InstrumentedAttribute[Any],
    now: datetime,
    lease_until: datetime,
    limit: int,
    only: ColumnElement[bool] | None = None,
) -> Sequence[Any]:
    """Claim up to `limit` rows whose `due` time has come (and that match `only`, if given) by
    pushing it to `lease_until`.

    On PostgreSQL the inner SELECT takes row locks with SKIP LOCKED, so concurrent workers on
    several replicas claim disjoint sets; SQLite has one writer anyway. If a worker dies, its
    lease runs out and another claims the row. Oldest first among equal times: fair queueing.
    """
    table = due.class_
    due_rows: Any = (
        select(table.id)
        .where(due <= now, *(() if only is None else (only,)))
        .order_by(due, table.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Materialized, so the rows are picked once: as a plain `id IN (SELECT ... LIMIT n)`, PostgreSQL
        # may run the subquery again when it rechecks a row another transaction just changed, and lease
        # more than n. (Not on SQLite: its driver would run a statement starting WITH outside the transaction.)
        due_rows = select(due_rows.cte("due_rows").prefix_with("MATERIALIZED").c.id)
    stmt = (
        update(table)
        .where(table.id.in_(due_rows.scalar_subquery()))
        .values({due.key: lease_until})
        .returning(table)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalars().all()


def add_event(
    session: AsyncSession, task: Task, now: datetime, source: str, state: State, outcome: str, **detail: Any
) -> None:
    session.add(TaskEvent(**event_row(task, now, source, state, outcome, **detail)))


def event_row(task: Task, now: datetime, source: str, state: State, outcome: str, **detail: Any) -> dict[str, Any]:
    detail = {key: value for key, value in detail.items() if value not in (None, (), [])}
    return {
        "task_id": task.id,
        "api_key_id": task.api_key_id,
        "at": now,
        "source": source,
        "to_state": state.value,
        "outcome": outcome,
        "detail": detail,
    }


def after_commit(session: AsyncSession, then: Callable[[], None]) -> None:
    """Once this transaction commits, `then()` is called (Deps.write)."""
    session.info.setdefault(AFTER_COMMIT, []).append(then)


def mark_changed(session: AsyncSession, task_ids: Sequence[str]) -> None:
    """Once this transaction commits, these tasks' cached statuses are dropped and their waiters
    woken in this process (Deps.write). Other replicas hear of it from PostgreSQL: a trigger
    NOTIFYs every change to a task's status (migrations/versions/*_notify_task_changes.py)."""
    session.info.setdefault(CHANGED_TASKS, set()).update(task_ids)
