"""Applying updates: `apply_updates`, the one idempotent way a task's state changes.

Callbacks (through the inbox) and the sweeper both end here. `decide` is the rule, pure: from
the tasks as they are and what providers said, the rows to write. A `TaskWriter` runs those
writes inside a transaction its caller owns: `SessionWriter` on an ORM session
(app/db/task_writer.py), or the callback path's raw-driver writer (app/db/raw_writer.py). `update_task` is the
one-update shorthand that opens its own transaction.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from app.db import queries
from app.db.tables import StoredFile, TaskEvent, WebhookDelivery
from app.db.task_writer import SessionWriter, TaskHead, TaskWriter
from app.deps import Deps
from app.observe import metrics
from app.outbox import copies, webhooks
from app.tasks.domain import CANCELED, State, Update, states_before
from app.tasks.storable import storable_update

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same or older news: nothing to do
    CONFLICT = "conflict"  # a different terminal result after the first one: kept in history only
    UNKNOWN_TASK = "unknown-task"
    MISMATCH = "mismatch"  # about another upstream task than the one this task is bound to: refused


@dataclass
class Decision:
    """What a batch of updates writes: the tasks' new columns and the rows beside them."""

    outcomes: list[Outcome] = field(default_factory=list)
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id: its new columns
    finished: list[tuple[TaskHead, Update, str]] = field(default_factory=list)  # reached a terminal state
    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            TaskEvent.__tablename__: [],
            StoredFile.__tablename__: [],
            WebhookDelivery.__tablename__: [],
        }
    )


async def apply_update(deps: Deps, writer: TaskWriter, task_id: str, change: Update, source: str) -> Outcome:
    """Record what a provider said about a task (see apply_updates)."""
    (outcome,) = await apply_updates(deps, writer, [(task_id, change, source)])
    return outcome


async def apply_updates(deps: Deps, writer: TaskWriter, updates: Sequence[tuple[str, Update, str]]) -> list[Outcome]:
    """Record what providers said about tasks, in order. Idempotent, monotonic, first terminal wins.

    The tasks are read locked, so each decision holds until commit. In the same transaction: each
    task's history, and at a terminal state the webhook to send (the outbox) and the copies to
    make, so a crash can lose none of them. Whatever the number of updates, this is one query to
    read and one statement per table to write.
    """
    if not updates:
        return []
    updates = [(task_id, storable_update(change), source) for task_id, change, source in updates]
    heads = await writer.lock_heads(sorted({task_id for task_id, _, _ in updates}))
    decision = decide(heads, updates, deps.clock(), deps.settings.webhook_retry_for_s)
    await writer.update_tasks(list(decision.writes.values()))
    for table, rows in decision.rows.items():
        await writer.insert(table, rows)
    writer.changed(list(decision.writes))
    if decision.finished:
        writer.after_commit(functools.partial(count_finished, decision.finished, deps.clock()))
    return decision.outcomes


def decide(
    heads: Mapping[str, TaskHead], updates: Sequence[tuple[str, Update, str]], now: datetime, webhook_retry_for_s: float
) -> Decision:
    """The rule itself, pure: each update in order against the task as the earlier ones left it."""
    decision, heads = Decision(), dict(heads)
    for task_id, change, source in updates:
        head = heads.get(task_id)
        outcome = Outcome.UNKNOWN_TASK if head is None else _judge(head, change, source)
        decision.outcomes.append(outcome)
        if head is None or outcome in (Outcome.UNKNOWN_TASK, Outcome.MISMATCH):
            continue
        if outcome is not Outcome.APPLIED and (cost := _charged_after_cancel(head, change)) is not None:
            decision.writes[task_id] = decision.writes.get(task_id, {"id": task_id}) | {"credits": cost}
        if outcome is Outcome.DUPLICATE:
            continue
        if outcome is Outcome.APPLIED:
            head, write = _advance(head, change, now)
            heads[task_id] = head
            decision.writes[task_id] = decision.writes.get(task_id, {}) | write
            _derived_rows(decision, head, change, now, webhook_retry_for_s)
            if change.state.terminal:
                decision.finished.append((head, change, source))
        event = queries.event_row(head, now, source, change.state, outcome, **_event_detail(change))
        decision.rows[TaskEvent.__tablename__].append(event)
    return decision


def _judge(head: TaskHead, change: Update, source: str) -> Outcome:
    if change.upstream_id and head.upstream_id and change.upstream_id != head.upstream_id:
        log.warning(
            "task %s is upstream %s; refusing an update about %s", head.id, head.upstream_id, change.upstream_id
        )
        return Outcome.MISMATCH
    if State(head.state) in states_before(change.state):
        return Outcome.APPLIED
    if _conflicts(head, change):
        log.warning("task %s is %s; ignoring a later %s from %s", head.id, head.state, change.state, source)
        return Outcome.CONFLICT
    return Outcome.DUPLICATE


def _advance(head: TaskHead, change: Update, now: datetime) -> tuple[TaskHead, dict[str, Any]]:
    """The task moved forward to change.state (already checked to be forward), and its new columns."""
    upstream_id = head.upstream_id or change.upstream_id
    write: dict[str, Any] = {"id": head.id, "state": change.state.value, "updated_at": now, "upstream_id": upstream_id}
    if change.state.terminal:
        # A failed task is not charged unless the provider says otherwise.
        charged = change.credits is not None or change.state is State.SUCCESS
        write |= {
            "image_urls": list(change.image_urls),
            "fail_code": change.fail_code,
            "fail_msg": change.fail_msg,
            "cost_time_ms": change.cost_time_ms,
            "credits": change.credits if charged else 0.0,
            "completed_at": now,
            "next_check_at": None,
        }
    image_urls = write.get("image_urls", head.image_urls)
    fail_code = write.get("fail_code", head.fail_code)
    moved = replace(head, state=change.state.value, upstream_id=upstream_id, image_urls=image_urls, fail_code=fail_code)
    return moved, write


def _charged_after_cancel(head: TaskHead, change: Update) -> float | None:
    """What the provider says it charged for a task canceled after it was sent: the provider cannot
    be told to stop, so it may finish the work, and its cost is the client's (usage counts it). The
    task's state stays as it is (first terminal wins)."""
    if head.fail_code == CANCELED and change.state.terminal:
        return change.credits
    return None


def _derived_rows(decision: Decision, head: TaskHead, change: Update, now: datetime, retry_for_s: float) -> None:
    if change.state is State.SUCCESS:
        decision.rows[StoredFile.__tablename__].extend(copies.copy_rows(head, now))
    if change.state.terminal and head.webhook_url:
        decision.rows[WebhookDelivery.__tablename__].append(webhooks.delivery_row(head, now, retry_for_s))


def count_finished(finished: list[tuple[TaskHead, Update, str]], committed_at: datetime) -> None:
    """The metrics of tasks that reached a terminal state, once that is committed."""
    for head, change, source in finished:
        metrics.labelled(metrics.TASKS_FINISHED, head.model, change.state.value).inc()
        metrics.labelled(metrics.TASK_DURATION, head.model).observe((committed_at - head.created_at).total_seconds())
        if source == "sweep":
            metrics.labelled(metrics.TASKS_FINISHED_BY_SWEEPER, head.model).inc()
        elif source == "callback" and change.completed_at is not None:
            delay_s = max(0.0, (committed_at - change.completed_at).total_seconds())
            metrics.labelled(metrics.CALLBACK_DELAY, head.model).observe(delay_s)


async def update_task(deps: Deps, task_id: str, change: Update, source: str) -> Outcome:
    async with deps.write() as session:
        return await apply_update(deps, SessionWriter(session), task_id, change, source)


def _conflicts(head: TaskHead, change: Update) -> bool:
    if not change.state.terminal or not State(head.state).terminal:
        return False
    return head.state != change.state or tuple(head.image_urls) != change.image_urls


def _event_detail(change: Update) -> dict[str, object]:
    return {
        "imageUrls": list(change.image_urls),
        "failCode": change.fail_code,
        "failMsg": change.fail_msg,
        "costTime": change.cost_time_ms,
        "upstreamId": change.upstream_id,
        "credits": change.credits,
    }
