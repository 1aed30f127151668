"""The sweeper on a shared database: replicas never work the same task in the same round, and tasks
waiting for a place in the create window cost nothing while they wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from app.db import queries
from app.db.tables import ApiKey, Task
from app.deps import Deps, open_deps
from app.keys import new_webhook_secret
from app.tasks.sweeper import sweep_once
from tests.e2e.test_e2e_flow import submit
from tests.support.clock import SteppedClock
from tests.support.gateways import EMULATOR_API_KEY, Emulator, StartGateway, gateway_settings
from tests.support.waiting import wait_until


async def upstream_tasks(emulator_url: str, count: int) -> list[str]:
    """Tasks that exist at the emulator and stay unfinished for the test's duration."""
    ids = []
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        await http.post("/emulator/faults", json={"generate_s": 120})
        for _ in range(count):
            body = {"model": "nano-banana-pro", "input": {"prompt": "p"}}
            response = await http.post(
                "/api/v1/jobs/createTask", json=body, headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"}
            )
            ids.append(response.json()["data"]["taskId"])
    return ids


async def due_tasks(sessions, upstream_ids: list[str], *, state: str = "pending") -> None:
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        key = ApiKey(name="k", key_hash="0" * 64, prefix="ih_", webhook_secret=new_webhook_secret(), created_at=now)
        session.add(key)
        await session.flush()
        for n, upstream_id in enumerate(upstream_ids):
            session.add(
                Task(
                    id=f"ih_task{n:04d}",
                    api_key_id=key.id,
                    provider="kie",
                    model="nano-banana-pro",
                    request={},
                    state=state,
                    upstream_id=upstream_id,
                    image_urls=[],
                    submit_attempts=1,
                    check_attempts=0,
                    next_check_at=None if state in ("success", "fail") else now - timedelta(seconds=1),
                    created_at=now,
                    updated_at=now,
                )
            )


@pytest.fixture
async def two_replicas(database_url: str, emulator) -> AsyncIterator[tuple[Deps, Deps]]:
    # A long re-check delay: a task checked in this round is not due again during the test.
    settings = gateway_settings(database_url, emulator.url, stale_after_s=60)
    async with open_deps(settings) as first, open_deps(settings) as second:
        yield first, second


async def test_two_sweepers_query_each_due_task_exactly_once(
    two_replicas: tuple[Deps, Deps], emulator, kie: Emulator, sessions
) -> None:
    ids = await upstream_tasks(emulator.url, 30)
    await due_tasks(sessions, ids)
    first, second = two_replicas
    reports = await asyncio.gather(sweep_once(first, limit=20), sweep_once(second, limit=20))
    assert reports[0]["checked"] + reports[1]["checked"] == 30
    calls = await kie.calls()
    assert sorted(calls["recordInfoByTask"]) == sorted(ids)
    assert set(calls["recordInfoByTask"].values()) == {1}
    async with sessions() as session:
        checks = (await session.execute(select(Task.check_attempts))).scalars().all()
    assert checks == [1] * 30


async def test_concurrent_claims_skip_rows_another_replica_holds(
    two_replicas: tuple[Deps, Deps], emulator, on_postgres: bool, sessions
) -> None:
    if not on_postgres:
        pytest.skip("row locks with SKIP LOCKED exist only on PostgreSQL; SQLite runs one sweeper")
    await due_tasks(sessions, [f"up{n}" for n in range(15)])
    now = datetime.now(UTC)
    lease = now + timedelta(minutes=1)
    first, second = two_replicas
    async with first.sessions.begin() as held:
        mine = await queries.claim(held, Task.next_check_at, now, lease, 10)
        # The first claim is still uncommitted: without SKIP LOCKED this would block.
        async with second.sessions.begin() as other:
            theirs = await queries.claim(other, Task.next_check_at, now, lease, 10)
    assert len(mine) == 10 and len(theirs) == 5
    assert not {t.id for t in mine} & {t.id for t in theirs}


async def test_finished_tasks_are_never_claimed(two_replicas: tuple[Deps, Deps], kie: Emulator, sessions) -> None:
    await due_tasks(sessions, [f"up{n}" for n in range(5)], state="success")
    report = await sweep_once(two_replicas[0])
    assert sum(report.values()) == 0
    assert (await kie.calls())["recordInfo"] == 0


async def test_tasks_waiting_for_the_create_window_cost_no_write_and_each_freed_place_sends_one(
    start_gateway: StartGateway, client_of, kie: Emulator, sessions
) -> None:
    clock = SteppedClock()
    window = timedelta(seconds=30)
    gateway = await start_gateway(clock=clock, kie_create_limit=2, kie_create_window_s=window.total_seconds())
    await kie.set_faults(generate_s=600)  # nothing finishes during the test
    async with client_of(gateway) as client:
        task_ids = [await submit(client) for _ in range(5)]

    async def rows() -> dict[str, tuple]:
        async with sessions() as session:
            found = (await session.execute(select(Task).where(Task.id.in_(task_ids)))).scalars()
            return {t.id: (t.upstream_id, t.next_check_at, t.submit_attempts, t.updated_at) for t in found}

    in_line = {task_id: row for task_id, row in (await rows()).items() if row[0] is None}
    assert len(in_line) == 3 and (await kie.calls())["createTask"] == 2
    clock.advance(window + timedelta(seconds=1))  # both places free, and every task in line is due
    await wait_until(kie.calls, lambda calls: calls["createTask"] == 4)
    await asyncio.sleep(1.5)  # many sweeper rounds, with the window full again
    after = await rows()
    assert (await kie.calls())["createTask"] == 4
    (still_waiting,) = [task_id for task_id, row in after.items() if row[0] is None]
    assert after[still_waiting] == in_line[still_waiting]  # due all along, yet never claimed nor rewritten
