"""What the dashboard shows, read from the shared database (so every replica shows the same),
never from one process's memory and never from a provider.

The summary is a few aggregate queries, kept for SUMMARY_TTL_S per process however many pages
are open; the last hour is that of the tasks submitted in it (an index range on created_at).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.db.tables import ApiKey, CallbackEvent, Task, TaskEvent, WebhookDelivery
from app.deps import Deps
from app.errors import BadRequest, NotFound
from app.inbound import url_values as query
from app.reads.listing import Page, decode_cursor, delivery_body, encode_cursor, page_size
from app.tasks.domain import TERMINAL, State
from app.tasks.status import status_body

SUMMARY_TTL_S = 2.0
DASHBOARD_PAGE = Page(25, 100)  # rows of everyone's tasks a page shows
HOUR = timedelta(hours=1)
CALLBACK_BODY_SHOWN = 2000  # characters of each inbox row's raw body


@dataclass
class Kept:
    """A value and when it was read (time.monotonic()), for one process's brief reuse."""

    value: dict[str, Any]
    read_at: float


async def summary(deps: Deps, kept: Kept | None) -> Kept:
    """Counts by state now, and for the tasks submitted in the last hour; `kept` if still fresh."""
    if kept is not None and time.monotonic() - kept.read_at < SUMMARY_TTL_S:
        return kept
    async with deps.sessions() as session:
        by_state = dict((await session.execute(select(Task.state, func.count()).group_by(Task.state))).all())
        last_hour = await _last_hour(session, deps.clock() - HOUR)
    value = {"states": {state.value: by_state.get(state.value, 0) for state in State}, "lastHour": last_hour}
    return Kept(value, time.monotonic())


async def _last_hour(session: AsyncSession, since: datetime) -> dict[str, Any]:
    terminal = [state.value for state in TERMINAL]
    recent = Task.created_at >= since
    calls = func.sum(case((Task.state.in_(terminal), Task.submit_attempts + Task.check_attempts)))
    counts = select(
        func.count(),
        func.count(case((Task.state == State.SUCCESS.value, 1))),
        func.count(case((Task.state == State.FAIL.value, 1))),
        func.coalesce(calls, 0),
    )
    submitted, succeeded, failed, upstream_calls = (await session.execute(counts.where(recent))).one()
    swept = select(func.count(func.distinct(TaskEvent.task_id))).join(Task, Task.id == TaskEvent.task_id)
    swept = swept.where(recent, TaskEvent.source == "sweep", TaskEvent.outcome == "applied")
    hooks = select(func.count()).select_from(WebhookDelivery).join(Task, Task.id == WebhookDelivery.task_id)
    finished = succeeded + failed
    return {
        "submitted": submitted,
        "succeeded": succeeded,
        "failed": failed,
        "upstreamCallsPerTask": round(upstream_calls / finished, 3) if finished else None,
        "recoveredBySweeper": (await session.execute(swept.where(TaskEvent.to_state.in_(terminal)))).scalar_one(),
        "webhookFailures": (await session.execute(hooks.where(recent, WebhookDelivery.state == "failed"))).scalar_one(),
    }


async def recent_tasks(deps: Deps, params: dict[str, str]) -> dict[str, Any]:
    """Everyone's tasks, newest first, paged by (created_at, id) as a client's own listing is."""
    limit = page_size(params.get("limit"), DASHBOARD_PAGE)
    stmt = select(Task, ApiKey.name).join(ApiKey, ApiKey.id == Task.api_key_id)
    if (state := params.get("state")) is not None:
        if state not in State.__members__.values():
            raise BadRequest(f"state must be one of: {', '.join(State)}")
        stmt = stmt.where(Task.state == state)
    if (cursor := params.get("cursor")) is not None:
        at, task_id = decode_cursor(cursor)
        stmt = stmt.where(or_(Task.created_at < at, and_(Task.created_at == at, Task.id < task_id)))
    stmt = stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    async with deps.sessions() as session:
        rows = list((await session.execute(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "tasks": [task_row(task, key_name) for task, key_name in rows],
        "nextCursor": encode_cursor(rows[-1][0]) if more else None,
    }


def task_row(task: Task, key_name: str) -> dict[str, Any]:
    finished = task.completed_at if task.state in TERMINAL else None
    return {
        "taskId": task.id,
        "model": task.model,
        "state": task.state,
        "keyName": key_name,
        "prompt": _prompt(task.request),
        "createdAt": task.created_at.isoformat(),
        "durationS": round((finished - task.created_at).total_seconds(), 1) if finished else None,
        "thumbnail": thumbnail(task),
        "failMsg": task.fail_msg if task.state == State.FAIL else None,
    }


def thumbnail(task: Task) -> str | None:
    """The stored copy of the first image (served to the operator by the dashboard), else the provider's URL."""
    if task.state != State.SUCCESS or not task.image_urls:
        return None
    return f"/dashboard/files/{task.id}/0" if 0 in task.stored_images else task.image_urls[0]


def _prompt(request: dict[str, Any]) -> str | None:
    prompt = (request.get("input") or {}).get("prompt")
    return prompt if isinstance(prompt, str) else None


async def task_detail(deps: Deps, task_id: str) -> dict[str, Any]:
    """One task: as its client sees it, and its history, callback inbox rows and webhooks."""
    query.task_id(task_id)
    async with deps.sessions() as session:
        found = (await session.execute(select(Task, ApiKey.name).join(ApiKey).where(Task.id == task_id))).first()
        if found is None:
            raise NotFound("Task not found")
        task, key_name = found
        history = select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
        events = (await session.execute(history)).scalars()
        inbox = select(CallbackEvent).where(CallbackEvent.task_id == task_id).order_by(CallbackEvent.id)
        callbacks = (await session.execute(inbox)).scalars()
        hooks = select(WebhookDelivery).where(WebhookDelivery.task_id == task_id).order_by(WebhookDelivery.id)
        deliveries = (await session.execute(hooks.options(selectinload(WebhookDelivery.attempt_log)))).scalars()
        return {
            "task": task_row(task, key_name) | {"status": status_body(task, deps.settings.public_base_url)},
            "events": [_event(event) for event in events],
            "callbacks": [_callback(callback) for callback in callbacks],
            "webhooks": [delivery_body(delivery) for delivery in deliveries],
        }


def _event(event: TaskEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "source": event.source,
        "state": event.to_state,
        "outcome": event.outcome,
        "detail": event.detail,
    }


def _callback(callback: CallbackEvent) -> dict[str, Any]:
    return {
        "id": callback.id,
        "receivedAt": callback.received_at.isoformat(),
        "provider": callback.provider,
        "verdict": callback.verdict,
        "headers": callback.headers,
        "body": callback.body[:CALLBACK_BODY_SHOWN],
    }
