"""Coalesced status reads: concurrent reads of single tasks share one query.

While one query runs, the reads that arrive meanwhile gather into the next one. A read is
never answered by a query that started before it, so it sees every commit made before it began.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.outage import is_outage
from app.db.sqlite_thread import SqliteThread, rows_by_id
from app.db.tables import Task

MAX_BATCH = 256


class TaskStatus(NamedTuple):
    """The columns a status body is made of, plus the owner. A change to any of them drops the task's
    cached status everywhere (the triggers of migrations/versions/*_cancel_and_queue.py watch exactly these)."""

    id: str
    api_key_id: int
    state: str
    model: str
    upstream_id: str | None  # none yet: the task may still be in line for a create (queuePosition)
    image_urls: list[str]
    stored_images: list[int]
    fail_code: str | None
    fail_msg: str | None
    cost_time_ms: int | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class Fetch(Protocol):
    async def __call__(self, task_ids: list[str]) -> Sequence[TaskStatus]: ...
    async def close(self) -> None: ...


class TaskLoader:
    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._waiting: dict[str, list[asyncio.Future[TaskStatus | None]]] = {}
        self._running: asyncio.Task[None] | None = None

    async def load(self, task_id: str) -> TaskStatus | None:
        """The task's status columns, or None if there is no such task."""
        future: asyncio.Future[TaskStatus | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(task_id, []).append(future)
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = dict(list(self._waiting.items())[:MAX_BATCH])
                for task_id in batch:
                    del self._waiting[task_id]
                await self._answer(batch)
        finally:
            self._running = None

    async def _answer(self, batch: dict[str, list[asyncio.Future[TaskStatus | None]]]) -> None:
        try:
            rows = {row.id: row for row in await self.fetch(list(batch))}
        except Exception as exc:
            if len(batch) > 1 and not is_outage(exc):
                # Something in one read broke the shared query: each read is asked on its own,
                # so only the read that caused it fails.
                for task_id, futures in batch.items():
                    await self._answer({task_id: futures})
                return
            _settle(batch, exception=exc)  # the database itself failed: every read of this batch alike
            return
        for task_id, futures in batch.items():
            _settle({task_id: futures}, result=rows.get(task_id))


def _settle(
    batch: dict[str, list[asyncio.Future[TaskStatus | None]]],
    result: TaskStatus | None = None,
    exception: BaseException | None = None,
) -> None:
    for futures in batch.values():
        for future in futures:
            if future.done():  # the client may have gone away
                continue
            if exception is not None:
                future.set_exception(exception)
            else:
                future.set_result(result)


def open_loader(engine: AsyncEngine) -> TaskLoader:
    database = make_url(engine.url).database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return TaskLoader(SqliteFetch(database))
    return TaskLoader(EngineFetch(engine))


STATUS_BY_IDS = select(*(getattr(Task, name) for name in TaskStatus._fields)).where(
    Task.id.in_(bindparam("ids", expanding=True))
)


class EngineFetch:
    """One connection kept for status reads, in autocommit: a read is one round trip, with no
    pool checkout, ping, BEGIN or reset around it. asyncpg needs no thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None

    async def __call__(self, task_ids: list[str]) -> Sequence[TaskStatus]:
        if self._connection is None:
            connection = await self.engine.connect()
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            rows = (await self._connection.execute(STATUS_BY_IDS, {"ids": task_ids})).all()
        except Exception:
            with contextlib.suppress(Exception):  # the connection may be what broke
                await self.close()
            self._connection = None  # the next batch starts on a fresh connection
            raise
        return [TaskStatus(*row) for row in rows]

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


class SqliteFetch:
    """One read-only connection on its own thread. aiosqlite would make about five thread
    round trips per query; this makes one, which is most of what a status read costs."""

    def __init__(self, path: str) -> None:
        self.connection = SqliteThread(path, "status-reads", lock_wait_s=30)

    async def __call__(self, task_ids: list[str]) -> Sequence[TaskStatus]:
        return await self.connection.run(functools.partial(_query, task_ids))

    async def close(self) -> None:
        await self.connection.close()


def _query(task_ids: list[str], connection: sqlite3.Connection) -> list[TaskStatus]:
    return [_decode(row) for row in rows_by_id(connection, "tasks", TaskStatus._fields, task_ids)]


def _decode(row: tuple[Any, ...]) -> TaskStatus:
    """What SQLAlchemy's JSON and UTCDateTime types would make of SQLite's text (app/db/tables.py)."""
    task_id, owner, state, model, upstream_id, image_urls, stored_images, *rest = row
    fail_code, fail_msg, cost_time_ms, *times = rest
    created_at, updated_at, completed_at = (_utc(value) for value in times)
    assert created_at is not None and updated_at is not None
    return TaskStatus(
        task_id,
        owner,
        state,
        model,
        upstream_id,
        _json_list(image_urls),
        _json_list(stored_images),
        fail_code,
        fail_msg,
        cost_time_ms,
        created_at,
        updated_at,
        completed_at,
    )


def _json_list(value: str | None) -> list[Any]:
    return (json.loads(value) if value else None) or []


def _utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
