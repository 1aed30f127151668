"""Applying updates: `apply_updates`, the one idempotent way a task's state changes.

Callbacks (through the inbox) and the sweeper both end here. The caller owns the transaction;
`update_task` is the one-update shorthand that opens its own.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.tables import StoredFile, Task, TaskEvent, WebhookDelivery
from app.deps import Deps
from app.outbox import copies, webhooks
from app.tasks.domain import State, Update, states_before
from app.tasks.storable import storable_update

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same or older news: nothing to do
    CONFLICT = "conflict"  # a different terminal result after the first one: kept in history only
    UNKNOWN_TASK = "unknown-task"
    MISMATCH = "mismatch"  # about another upstream task than the one this task is bound to: refused


async def apply_update(deps: Deps, session: AsyncSession, task_id: str, change: Update, source: str) -> Outcome:
    """Record what a provider said about a task (see apply_updates)."""
    (outcome,) = await apply_updates(deps, session, [(task_id, change, source)])
    return outcome


async def apply_updates(deps: Deps, session: AsyncSession, updates: Sequence[tuple[str, Update, str]]) -> list[Outcome]:
    """Record what providers said about tasks, in order. Idempotent, monotonic, first terminal wins.

    The tasks are read locked (FOR UPDATE on PostgreSQL; on SQLite a write from a stale read
    fails the transaction instead), so each decision holds until commit. In the same
    transaction: each task's history, and at a terminal state the webhook to send (the outbox)
    and the copies to make, so a crash can lose none of them. Whatever the number of updates,
    this is one query to read and one statement per table to write.
    """
    now = deps.clock()
    updates = [(task_id, storable_update(change), source) for task_id, change, source in updates]
    tasks = await queries.lock_tasks(session, {task_id for task_id, _, _ in updates})
    rows = NewRows()
    outcomes = [_apply(deps, rows, tasks.get(task_id), change, source, now) for task_id, change, source in updates]
    queries.mark_changed(session, rows.changed)
    for table, table_rows in ((TaskEvent, rows.events), (StoredFile, rows.copies), (WebhookDelivery, rows.webhooks)):
        await queries.insert_rows(session, table, table_rows)
    return outcomes


@dataclass
class NewRows:
    """What a batch of updates adds beside the tasks themselves, inserted a table at a time."""

    changed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)


def _apply(deps: Deps, rows: NewRows, task: Task | None, change: Update, source: str, now: datetime) -> Outcome:
    if task is None:
        return Outcome.UNKNOWN_TASK
    if change.upstream_id and task.upstream_id and change.upstream_id != task.upstream_id:
        log.warning(
            "task %s is upstream %s; refusing an update about %s", task.id, task.upstream_id, change.upstream_id
        )
        return Outcome.MISMATCH
    if State(task.state) in states_before(change.state):
        outcome = Outcome.APPLIED
        queries.advance(task, change, now)
        if change.state is State.SUCCESS:
            rows.copies.extend(copies.copy_rows(task, now))
        if change.state.terminal and task.webhook_url:
            rows.webhooks.append(webhooks.delivery_row(task, now, deps.settings.webhook_retry_for_s))
        rows.changed.append(task.id)
    elif _conflicts(task, change):
        outcome = Outcome.CONFLICT
        log.warning("task %s is %s; ignoring a later %s from %s", task.id, task.state, change.state, source)
    else:
        return Outcome.DUPLICATE
    rows.events.append(queries.event_row(task, now, source, change.state, outcome, **_event_detail(change)))
    return outcome


async def update_task(deps: Deps, task_id: str, change: Update, source: str) -> Outcome:
    async with deps.write() as session:
        return await apply_update(deps, session, task_id, change, source)


def _conflicts(task: Task, change: Update) -> bool:
    if not change.state.terminal or not State(task.state).terminal:
        return False
    return task.state != change.state or tuple(task.image_urls) != change.image_urls


def _event_detail(change: Update) -> dict[str, object]:
    return {
        "imageUrls": list(change.image_urls),
        "failCode": change.fail_code,
        "failMsg": change.fail_msg,
        "costTime": change.cost_time_ms,
        "upstreamId": change.upstream_id,
    }
