"""What applying an update reads and writes, and the writer that does it on an ORM session.

`TaskHead` is the part of a task the transition rule reads (app/tasks/updates.py); a
`TaskWriter` runs the rule's writes inside a transaction its caller owns. `SessionWriter` is the
one for ORM sessions (the sweeper, submit); the callback path has raw-driver writers of its own
(app/db/raw_writer.py) that run the very same writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.tables import Base, Task


@dataclass(frozen=True)
class TaskHead:
    id: str
    api_key_id: int
    state: str
    upstream_id: str | None
    image_urls: list[str]
    webhook_url: str | None
    model: str
    created_at: datetime
    fail_code: str | None  # a canceled task still records what the provider charges for it


HEAD_COLUMNS = tuple(TaskHead.__dataclass_fields__)


class TaskWriter(Protocol):
    async def lock_heads(self, task_ids: Sequence[str]) -> dict[str, TaskHead]:
        """The tasks' heads, locked against other writers until commit (rows on PostgreSQL,
        taken in id order so overlapping sets cannot deadlock; SQLite has one writer)."""
        ...

    async def update_tasks(self, writes: Sequence[dict[str, Any]]) -> None:
        """Set each dict's columns on the task its "id" names."""
        ...

    async def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """The rows, in one statement, no ids fetched back."""
        ...

    async def reschedule(self, task_ids: Sequence[str], next_check_at: datetime) -> None:
        """When the sweeper looks at these tasks next; a terminal task stays unscheduled."""
        ...

    def changed(self, task_ids: Sequence[str]) -> None:
        """Once committed, these tasks' cached statuses are dropped and their waiters woken."""
        ...

    def after_commit(self, then: Callable[[], None]) -> None:
        """Call `then` once the transaction has committed (never if it does not)."""
        ...


class SessionWriter:
    """A TaskWriter on an ORM session, for transactions opened by Deps.write()."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_heads(self, task_ids: Sequence[str]) -> dict[str, TaskHead]:
        columns = [getattr(Task, name) for name in HEAD_COLUMNS]
        stmt = select(*columns).where(Task.id.in_(sorted(task_ids))).order_by(Task.id).with_for_update()
        return {row.id: TaskHead(*row) for row in await self.session.execute(stmt)}

    async def update_tasks(self, writes: Sequence[dict[str, Any]]) -> None:
        for same_columns in group_by_columns(writes):
            await self.session.execute(update(Task), same_columns)  # bulk UPDATE by primary key

    async def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(Base.metadata.tables[table]), rows)

    async def reschedule(self, task_ids: Sequence[str], next_check_at: datetime) -> None:
        for task_id in task_ids:
            await queries.reschedule(self.session, task_id, next_check_at)

    def changed(self, task_ids: Sequence[str]) -> None:
        queries.mark_changed(self.session, task_ids)

    def after_commit(self, then: Callable[[], None]) -> None:
        queries.after_commit(self.session, then)


def group_by_columns(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows, grouped by which columns they set: one statement per group."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return list(groups.values())
