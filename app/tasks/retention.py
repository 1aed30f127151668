"""Retention: delete old finished tasks with everything that hangs off them, in small batches."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from app.db import queries
from app.db.tables import (
    CallbackEvent,
    IdempotencyKey,
    StoredFile,
    Task,
    TaskEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from app.deps import Deps
from app.outbox.storage import open_storage
from app.tasks.domain import TERMINAL

log = logging.getLogger(__name__)

# Short transactions with a pause between them: the service keeps its write lock turns.
PAUSE_S = 0.05


async def purge(deps: Deps, older_than: timedelta, batch: int = 500) -> Counter[str]:
    cutoff = deps.clock() - older_than
    removed: Counter[str] = Counter()
    while task_ids := await _old_tasks(deps, cutoff, batch):
        removed += await _delete_tasks(deps, task_ids)
        await asyncio.sleep(PAUSE_S)
    # Inbox rows for tasks that never existed (forged or mistyped callbacks) age out too.
    while await _delete_batch(deps, CallbackEvent, CallbackEvent.received_at < cutoff, batch, removed):
        await asyncio.sleep(PAUSE_S)
    return removed


async def _old_tasks(deps: Deps, cutoff: datetime, batch: int) -> list[str]:
    stmt = (
        select(Task.id)
        .where(Task.created_at < cutoff, Task.state.in_([state.value for state in TERMINAL]))
        .limit(batch)
    )
    async with deps.sessions() as session:
        return list((await session.execute(stmt)).scalars())


async def _delete_tasks(deps: Deps, task_ids: list[str]) -> Counter[str]:
    storage = open_storage(deps.settings)
    async with deps.sessions() as session:
        keys = (await session.execute(select(StoredFile.storage_key).where(StoredFile.task_id.in_(task_ids)))).scalars()
        files = [key for key in keys if key]
    for key in files:  # files first: a crash leaves rows pointing at nothing, never orphaned files
        await storage.delete(key)
    removed: Counter[str] = Counter(files=len(files))
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.task_id.in_(task_ids)).scalar_subquery()
    async with deps.write() as session:
        queries.mark_changed(session, task_ids)
        for table, condition in (
            (WebhookAttempt, WebhookAttempt.delivery_id.in_(deliveries)),
            (WebhookDelivery, WebhookDelivery.task_id.in_(task_ids)),
            (StoredFile, StoredFile.task_id.in_(task_ids)),
            (TaskEvent, TaskEvent.task_id.in_(task_ids)),
            (CallbackEvent, CallbackEvent.task_id.in_(task_ids)),
            (IdempotencyKey, IdempotencyKey.task_id.in_(task_ids)),
            (Task, Task.id.in_(task_ids)),
        ):
            removed[table.__tablename__] += (await session.execute(delete(table).where(condition))).rowcount
    return removed


async def _delete_batch(deps: Deps, table: type, condition: object, batch: int, removed: Counter[str]) -> int:
    ids = select(table.id).where(condition).limit(batch).scalar_subquery()  # type: ignore[attr-defined]
    async with deps.write() as session:
        count = (await session.execute(delete(table).where(table.id.in_(ids)))).rowcount  # type: ignore[attr-defined]
    removed[table.__tablename__] += count  # type: ignore[attr-defined]
    return count
