"""The sweeper and a full create window: tasks waiting for a place cost no write while they wait,
and each freed place is one create, oldest task first, each task created exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db.tables import ApiKey, Task
from app.deps import Deps, open_deps
from app.keys import new_webhook_secret
from app.tasks import throttle
from app.tasks.sweeper import sweep_once
from tests.support.clock import SteppedClock
from tests.support.gateways import Emulator, gateway_settings

WINDOW = timedelta(seconds=5)
LIMIT = 2


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def replicas(database_url: str, emulator, kie: Emulator, clock: SteppedClock) -> AsyncIterator[tuple[Deps, Deps]]:
    """Two replicas sharing one database and one create window of LIMIT per WINDOW; tasks once
    created stay unfinished and are not checked during the test."""
    await kie.set_faults(generate_s=600)
    settings = gateway_settings(
        database_url,
        emulator.url,
        kie_create_limit=LIMIT,
        kie_create_window_s=WINDOW.total_seconds(),
        stale_after_s=600,
        task_timeout_s=3600,
    )
    async with open_deps(settings, clock=clock) as first, open_deps(settings, clock=clock) as second:
        yield first, second


async def queue_tasks(sessions, clock: SteppedClock, count: int, *, age: timedelta = timedelta(0)) -> list[str]:
    """`count` unsent tasks, due now, in submission order (oldest first)."""
    now = clock() - age
    ids = [f"ih_queued{n:04d}" for n in range(count)]
    async with sessions.begin() as session:
        key = ApiKey(name="q", key_hash="1" * 64, prefix="ih_", webhook_secret=new_webhook_secret(), created_at=now)
        session.add(key)
        await session.flush()
        for n, task_id in enumerate(ids):
            created = now - timedelta(seconds=count - n)
            request = {"model": "nano-banana-pro", "input": {"prompt": f"p{n}"}}
            session.add(
                Task(
                    id=task_id,
                    api_key_id=key.id,
                    provider="kie",
                    model="nano-banana-pro",
                    request=request,
                    state="pending",
                    image_urls=[],
                    stored_images=[],
                    credit_reserve=0,
                    submit_attempts=0,
                    check_attempts=0,
                    next_check_at=created,
                    created_at=created,
                    updated_at=created,
                )
            )
    return ids


async def fill_window(deps: Deps) -> None:
    for _ in range(LIMIT):
        assert (await throttle.take_slot(deps, "kie")).id is not None


async def snapshot(sessions) -> list[tuple]:
    """Every column a write to a waiting task would change."""
    columns = (Task.id, Task.next_check_at, Task.submit_attempts, Task.upstream_id, Task.updated_at)
    async with sessions() as session:
        return [tuple(row) for row in await session.execute(select(*columns).order_by(Task.id))]


async def sent(sessions) -> list[str]:
    async with sessions() as session:
        stmt = select(Task.id).where(Task.upstream_id.is_not(None)).order_by(Task.id)
        return list((await session.execute(stmt)).scalars())


def data_version(engine) -> sqlite3.Connection | None:
    """On SQLite, a connection whose `PRAGMA data_version` moves with every commit of another one."""
    if engine.dialect.name != "sqlite":
        return None
    return sqlite3.connect(engine.url.database)


def version(watcher: sqlite3.Connection | None) -> int | None:
    return None if watcher is None else watcher.execute("PRAGMA data_version").fetchone()[0]


async def test_a_full_window_costs_waiting_tasks_no_write_and_each_freed_place_one_create(
    replicas: tuple[Deps, Deps], kie: Emulator, sessions, clock: SteppedClock
) -> None:
    first, _ = replicas
    ids = await queue_tasks(sessions, clock, 9)
    await fill_window(first)
    watcher = data_version(first.engine)
    before, committed = await snapshot(sessions), version(watcher)
    reports = [await sweep_once(first) for _ in range(4)]
    assert reports == [{}] * 4
    assert await snapshot(sessions) == before
    assert version(watcher) == committed  # no commit changed the database at all
    assert (await kie.calls())["createTask"] == 0
    for freed in range(1, 6):
        clock.advance(WINDOW)
        report = await sweep_once(first)
        expected = min(LIMIT * freed, len(ids))
        assert report["resubmitted"] == expected - LIMIT * (freed - 1)
        assert (await kie.calls())["createTask"] == expected
        assert await sent(sessions) == ids[:expected]  # in submission order
        assert await sweep_once(first) == {}  # the window is full again: nothing claimed
    if watcher is not None:
        watcher.close()


async def test_replicas_racing_for_freed_places_create_only_as_many_and_each_task_once(
    replicas: tuple[Deps, Deps], kie: Emulator, sessions, clock: SteppedClock
) -> None:
    """Both replicas may read the same free places; the slot each send takes refuses the extra
    claims (which replica sends first is theirs to race), and those tasks wait in line again at the front."""
    ids = await queue_tasks(sessions, clock, 8)
    await fill_window(replicas[0])
    for freed in range(1, 5):
        clock.advance(WINDOW)
        await asyncio.gather(*(sweep_once(deps) for deps in replicas))
        assert (await kie.calls())["createTask"] == LIMIT * freed
        assert len(await sent(sessions)) == LIMIT * freed
    assert await sent(sessions) == ids
    clock.advance(WINDOW)
    assert [await sweep_once(deps) for deps in replicas] == [{}, {}]
    upstream = [task["taskId"] for task in await kie.tasks()]
    assert len(upstream) == len(set(upstream)) == len(ids)


async def test_a_waiting_task_past_its_timeout_times_out_while_the_window_is_full(
    replicas: tuple[Deps, Deps], kie: Emulator, sessions, clock: SteppedClock
) -> None:
    first, _ = replicas
    [old] = await queue_tasks(sessions, clock, 1, age=timedelta(seconds=first.settings.task_timeout_s))
    await fill_window(first)
    assert await sweep_once(first) == {"timed_out": 1}
    async with sessions() as session:
        assert (await session.get(Task, old)).state == "fail"
    assert (await kie.calls())["createTask"] == 0
