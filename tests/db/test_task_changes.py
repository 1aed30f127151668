"""On SQLite, a commit, by any connection or process, drops the cached statuses of exactly the
tasks it changed (triggers record them in task_changes; the watcher reads them)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select, update

from app.db import queries
from app.db.migrate import alembic_config
from app.db.tables import Task, TaskChange
from app.deps import Deps, open_deps
from app.main import watch_changes
from app.reads.loader import TaskStatus
from app.tasks import updates
from app.tasks.domain import State, Update
from app.tasks.status import read_status
from tests.support.gateways import gateway_settings
from tests.support.waiting import wait_until

# Where no request of these tests ever goes.
NO_PROVIDER = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def sqlite_only(on_postgres: bool) -> None:
    if on_postgres:
        pytest.skip("PostgreSQL announces changes by NOTIFY (app/reads/watch.py listen_postgres)")


class CountingFetch:
    """The loader's fetch, counting the tasks it was asked for."""

    def __init__(self, fetch: Any) -> None:
        self.fetch, self.asked = fetch, []

    async def __call__(self, task_ids: list[str]) -> Sequence[TaskStatus]:
        self.asked.extend(task_ids)
        return await self.fetch(task_ids)

    async def close(self) -> None:
        await self.fetch.close()


@pytest.fixture
async def gateway_deps(database_url: str) -> AsyncIterator[Deps]:
    """A gateway's Deps, its watcher running, its status reads counted."""
    async with open_deps(gateway_settings(database_url, NO_PROVIDER)) as deps:
        deps.loader.fetch = CountingFetch(deps.loader.fetch)
        watcher = asyncio.create_task(watch_changes(deps))
        try:
            yield deps
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


@pytest.fixture
async def owner(make_client_key) -> int:
    return (await make_client_key("cache")).id


async def add_tasks(sessions, owner: int, *task_ids: str) -> None:
    now = datetime.now(UTC)
    common = {"api_key_id": owner, "provider": "kie", "model": "nano-banana-pro", "request": {"prompt": "x"}}
    async with sessions.begin() as session:
        session.add_all(
            Task(id=task_id, state="processing", next_check_at=now, created_at=now, updated_at=now, **common)
            for task_id in task_ids
        )


async def cached(deps: Deps, owner: int, *task_ids: str) -> None:
    """Read each task until its status is served from the cache (the watcher has started)."""
    for task_id in task_ids:
        await wait_until(lambda t=task_id: read_status(deps, owner, t), lambda _, t=task_id: deps.status_cache.get(t))
        assert deps.status_cache.get(task_id) is not None


async def dropped(deps: Deps, task_id: str) -> bool:
    return await wait_until(lambda: deps.status_cache.get(task_id) is None, timeout=2)


def asked(deps: Deps) -> list[str]:
    assert isinstance(deps.loader.fetch, CountingFetch)
    return deps.loader.fetch.asked


async def test_a_commit_by_another_process_drops_only_the_tasks_it_changed(
    gateway_deps: Deps, engine, sessions, owner: int
) -> None:
    await add_tasks(sessions, owner, "ih_a", "ih_b")
    await cached(gateway_deps, owner, "ih_a", "ih_b")
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        " c.execute(\"UPDATE tasks SET state = 'success' WHERE id = 'ih_a'\"); c.commit()"
    )
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script, engine.url.database], check=True)
    assert await dropped(gateway_deps, "ih_a")
    before = len(asked(gateway_deps))
    b = await read_status(gateway_deps, owner, "ih_b")
    assert asked(gateway_deps)[before:] == []  # B served from the cache, no query
    assert b.body == gateway_deps.status_cache.get("ih_b").body
    a = await read_status(gateway_deps, owner, "ih_a")
    assert asked(gateway_deps)[before:] == ["ih_a"] and b'"state":"success"' in a.body


async def test_a_separate_sweeper_wakes_the_waiters_of_what_it_finished_and_leaves_the_rest_cached(
    gateway_deps: Deps, database_url: str, sessions, owner: int
) -> None:
    """`imagehook sweep` run on its own: its own engine; a reschedule changes nothing a client sees."""
    await add_tasks(sessions, owner, "ih_a", "ih_b")
    await cached(gateway_deps, owner, "ih_a", "ih_b")
    async with open_deps(gateway_settings(database_url, NO_PROVIDER)) as sweeper:
        with gateway_deps.watch.watch("ih_a") as a_changed:
            await updates.update_task(sweeper, "ih_a", Update(State.SUCCESS, image_urls=("https://x/a.png",)), "sweep")
            await asyncio.wait_for(a_changed.wait(), timeout=2)  # set by the watcher, not by a re-check
        async with sweeper.write() as session:
            await queries.reschedule(session, "ih_b", datetime.now(UTC) + timedelta(minutes=5), check_attempts=3)
    assert gateway_deps.status_cache.get("ih_a") is None
    await asyncio.sleep(0.3)  # the reschedule's commit is seen, and changes no cached status
    before = len(asked(gateway_deps))
    assert b'"state":"processing"' in (await read_status(gateway_deps, owner, "ih_b")).body
    assert asked(gateway_deps)[before:] == []


async def changes_of(sessions, task_id: str) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(TaskChange).where(TaskChange.task_id == task_id)
        return (await session.execute(stmt)).scalar_one()


async def test_every_column_a_status_is_made_of_is_recorded_and_no_other(sessions, owner, make_client_key) -> None:
    await add_tasks(sessions, owner, "ih_a")
    later = datetime.now(UTC) + timedelta(seconds=1)
    other_owner = (await make_client_key("other")).id
    shown = {
        "api_key_id": other_owner,
        "state": "success",
        "model": "flux-kontext-pro",
        "image_urls": ["https://x/a.png"],
        "stored_images": [0],  # a stored copy changes the image's URL
        "fail_msg": "no",
        "fail_code": "canceled",
        "upstream_id": "u1",  # sent: no longer in line for a create
        "cost_time_ms": 12,
        "created_at": later,
        "updated_at": later,
        "completed_at": later,
    }
    assert set(shown) == set(TaskStatus._fields) - {"id"}
    for n, (column, value) in enumerate(shown.items(), start=1):
        async with sessions.begin() as session:
            await session.execute(update(Task).where(Task.id == "ih_a").values({column: value}))
        assert await changes_of(sessions, "ih_a") == n, column
    hidden = {"next_check_at": None, "check_attempts": 4, "submit_attempts": 2, "credits": 1.5, "credit_reserve": 2.0}
    async with sessions.begin() as session:
        await session.execute(update(Task).where(Task.id == "ih_a").values(cancel_at=later, **hidden))
    assert await changes_of(sessions, "ih_a") == len(shown)
    async with sessions.begin() as session:
        await session.delete(await session.get(Task, "ih_a"))
    assert await changes_of(sessions, "ih_a") == len(shown) + 1


TASK_CHANGES_REVISION = "7d2f4a9c1e36"  # the migration that made task_changes and its triggers


def retained(database_url: str) -> int:
    script = ScriptDirectory.from_config(alembic_config(database_url))
    return script.get_revision(TASK_CHANGES_REVISION).module.RETAINED


async def add_changes(sessions, count: int) -> None:
    async with sessions.begin() as session:
        await session.execute(insert(TaskChange), [{"task_id": f"ih_other{n}"} for n in range(count)])


async def test_changes_a_watcher_never_read_make_every_cached_status_stale(
    gateway_deps: Deps, database_url: str, sessions, owner: int
) -> None:
    """The writer keeps only the newest rows; a watcher that missed pruned ones cannot know which tasks they named."""
    await add_tasks(sessions, owner, "ih_b")
    await cached(gateway_deps, owner, "ih_b")
    keep = retained(database_url)
    await add_changes(sessions, keep + 5)  # in one commit: pruned before the watcher looks
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(TaskChange))).scalar_one() == keep
    assert await dropped(gateway_deps, "ih_b")


async def test_a_watcher_that_keeps_up_is_not_misled_by_pruning(
    gateway_deps: Deps, database_url: str, sessions, owner: int
) -> None:
    await add_tasks(sessions, owner, "ih_b")
    await add_changes(sessions, retained(database_url))  # full: from now on each change prunes one
    await cached(gateway_deps, owner, "ih_b")
    await asyncio.sleep(0.3)  # the watcher has read those before the next change prunes the first
    for _ in range(3):
        await add_changes(sessions, 1)
        await asyncio.sleep(0.3)
    assert gateway_deps.status_cache.get("ih_b") is not None
