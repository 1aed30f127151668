"""Reading a client's own records in pages: tasks newest first, the change feed, deliveries."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import selectinload

from app.db.tables import Task, TaskEvent, WebhookDelivery
from app.deps import Deps
from app.errors import BadRequest
from app.inbound import url_values as query
from app.inbound.untrusted import load_json
from app.providers.catalogue import MODELS
from app.tasks.domain import State
from app.tasks.status import client_status

# On PostgreSQL, ids are handed out at insert but become visible at commit, so a later id can
# appear before an earlier one. The feed shows only events older than this, by which time
# every transaction that could still add an earlier id has long committed.
FEED_SETTLE_S = 2.0


class Page(NamedTuple):
    """How many records a page holds when `limit` is not given, and at most (the contract publishes both)."""

    default: int
    maximum: int


TASKS_PAGE, FEED_PAGE, DELIVERIES_PAGE = Page(20, 100), Page(100, 500), Page(50, 200)


def page_size(raw: str | None, page: Page) -> int:
    if raw is None:
        return page.default
    size = query.integer(raw, 1, page.maximum)
    if size is None:
        raise BadRequest(f"limit must be an integer from 1 to {page.maximum}")
    return size


def encode_cursor(task: Task) -> str:
    return base64.urlsafe_b64encode(json.dumps([task.created_at.isoformat(), task.id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a page ended at; anything but a cursor this service made is a 400."""
    try:
        created_at, task_id = load_json(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(created_at, str) and isinstance(task_id, str) and query.is_task_id(task_id):
            return query.timestamp("cursor", created_at), task_id
    except (ValueError, TypeError, BadRequest, binascii.Error):
        pass
    raise BadRequest("cursor is invalid")


async def list_tasks(deps: Deps, api_key_id: int, params: dict[str, str]) -> dict[str, Any]:
    """Newest first; keyset pagination on (created_at, id), so inserts never shift pages. A filter given
    empty (`state=`) is refused as any other bad value is, not taken for no filter."""
    limit = page_size(params.get("limit"), TASKS_PAGE)
    stmt = select(Task).where(Task.api_key_id == api_key_id)
    if (state := params.get("state")) is not None:
        if state not in State.__members__.values():
            raise BadRequest(f"state must be one of: {', '.join(State)}")
        stmt = stmt.where(Task.state == state)
    if (model := params.get("model")) is not None:
        if model not in MODELS:
            raise BadRequest(f"Unknown model '{model}'; GET /api/images/models lists the supported models")
        stmt = stmt.where(Task.model == model)
    if (created_after := params.get("createdAfter")) is not None:
        stmt = stmt.where(Task.created_at > query.timestamp("createdAfter", created_after))
    if (cursor := params.get("cursor")) is not None:
        at, task_id = decode_cursor(cursor)
        stmt = stmt.where(or_(Task.created_at < at, and_(Task.created_at == at, Task.id < task_id)))
    stmt = stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    async with deps.sessions() as session:
        tasks = list((await session.execute(stmt)).scalars())
    more = len(tasks) > limit
    tasks, now = tasks[:limit], deps.clock().timestamp()
    return {
        "tasks": [client_status(task, deps.settings, now)[0] for task in tasks],
        "nextCursor": encode_cursor(tasks[-1]) if more else None,
    }


async def feed(deps: Deps, api_key_id: int, params: dict[str, str]) -> dict[str, Any]:
    """The client's state changes in order, after an event id: the catch-up path for missed webhooks."""
    after = query.integer(params.get("after", "0"))
    if after is None:
        raise BadRequest(f"after must be an event id (an integer from 0 to {query.MAX_ID})")
    events = await changes_after(deps, after, page_size(params.get("limit"), FEED_PAGE), api_key_id)
    return {
        "events": [event_body(event) for event in events],
        "nextCursor": str(events[-1].id if events else after),
    }


async def changes_after(deps: Deps, after: int, limit: int, api_key_id: int | None) -> list[TaskEvent]:
    """Tasks created and state changes applied, in order, after event id `after`: one client's, or
    (api_key_id None, the operator's dashboard) everyone's."""
    stmt = (
        select(TaskEvent)
        .where(TaskEvent.id > after, TaskEvent.outcome.in_(("created", "applied")))
        .order_by(TaskEvent.id)
        .limit(limit)
    )
    if api_key_id is not None:
        stmt = stmt.where(TaskEvent.api_key_id == api_key_id)
    if deps.engine.dialect.name == "postgresql":
        stmt = stmt.where(TaskEvent.at <= deps.clock() - timedelta(seconds=FEED_SETTLE_S))
    async with deps.sessions() as session:
        return list((await session.execute(stmt)).scalars())


async def latest_event_id(deps: Deps) -> int:
    async with deps.sessions() as session:
        return (await session.execute(select(func.coalesce(func.max(TaskEvent.id), 0)))).scalar_one()


def event_body(event: TaskEvent) -> dict[str, Any]:
    return {"id": event.id, "taskId": event.task_id, "state": event.to_state, "at": event.at.isoformat()} | {
        key: event.detail[key] for key in ("imageUrls", "failMsg", "failCode") if key in event.detail
    }


async def list_deliveries(deps: Deps, api_key_id: int, params: dict[str, str]) -> dict[str, Any]:
    limit = page_size(params.get("limit"), DELIVERIES_PAGE)
    stmt = select(WebhookDelivery).where(WebhookDelivery.api_key_id == api_key_id)
    if (task_id := params.get("taskId")) is not None:
        stmt = stmt.where(WebhookDelivery.task_id == query.task_id(task_id))
    stmt = stmt.order_by(WebhookDelivery.id.desc()).limit(limit)
    async with deps.sessions() as session:
        deliveries = list((await session.execute(stmt.options(selectinload(WebhookDelivery.attempt_log)))).scalars())
    return {"deliveries": [delivery_body(delivery) for delivery in deliveries]}


def delivery_body(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhookId": delivery.webhook_id,
        "taskId": delivery.task_id,
        "url": delivery.url,
        "eventType": delivery.event_type,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "nextAttemptAt": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
        "lastStatus": delivery.last_status,
        "lastError": delivery.last_error,
        "createdAt": delivery.created_at.isoformat(),
        "deliveredAt": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "attemptLog": [
            {
                "at": attempt.at.isoformat(),
                "statusCode": attempt.status_code,
                "error": attempt.error,
                "durationMs": attempt.duration_ms,
                "responseBody": attempt.response_body,
            }
            for attempt in delivery.attempt_log
        ],
    }
