"""End to end: the usage ledger, per-key limits under concurrency, the upstream throttle, retention."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, or_, select, update

from app.db.tables import ApiKey, CallbackEvent, Task, TaskEvent
from app.deps import open_deps
from app.tasks.domain import TERMINAL
from app.tasks.retention import purge
from tests.e2e.test_e2e_flow import submit
from tests.support.database import count_rows
from tests.support.gateways import EMULATOR_API_KEY, ClientOf, Emulator, Gateway, StartGateway, wait_for_state
from tests.support.waiting import wait_until


async def set_limits(sessions, key_id: int, **limits: float) -> None:
    async with sessions.begin() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**limits))


async def keyed_client(gateway: Gateway, make_client_key, sessions, **limits: float) -> httpx.AsyncClient:
    key = await make_client_key("limited")
    await set_limits(sessions, key.id, **limits)
    return httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key.key}"}, timeout=30)


async def burst(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    return await asyncio.gather(*(client.post("/api/images/generate", json={"prompt": f"fox {i}"}) for i in range(n)))


async def test_usage_sums_credits_per_model_and_day(client: httpx.AsyncClient, kie: Emulator, gateway, client_of):
    await kie.set_faults(generate_s=0.1, credits_per_image=4)
    done = [await submit(client), await submit(client), await submit(client, model="google/nano-banana")]
    await kie.set_faults(generate_s=0.1, fail_rate=1.0)
    failed = await submit(client)
    for task_id in [*done, failed]:
        await wait_for_state(client, task_id, {"success", "fail"})
    by_model = (await client.get("/api/usage", params={"groupBy": "model"})).json()
    assert by_model["groups"] == [
        {"model": "google/nano-banana", "tasks": 1, "credits": 4.0, "reserved": 0.0},
        {"model": "nano-banana-pro", "tasks": 3, "credits": 8.0, "reserved": 0.0},
    ]
    assert by_model["total"] == {"tasks": 4, "credits": 12.0, "reserved": 0.0}
    by_day = (await client.get("/api/usage", params={"groupBy": "day"})).json()
    assert [(g["tasks"], g["credits"]) for g in by_day["groups"]] == [(4, 12.0)]
    assert by_day["groups"][0]["day"] == by_model["to"][:10]
    async with client_of(gateway) as other:
        assert (await other.get("/api/usage")).json()["total"]["tasks"] == 0
    assert (await client.get("/api/usage", params={"groupBy": "key"})).status_code == 400
    for empty in ("from", "to"):  # given but empty is refused, not read as the default
        refused = await client.get("/api/usage", params={empty: ""})
        assert refused.json() == {"error": f"{empty} must be an ISO 8601 date-time"}


async def test_rate_limit_holds_at_its_boundary_under_concurrency(
    gateway: Gateway, kie: Emulator, make_client_key, sessions
) -> None:
    await kie.set_faults(generate_s=60)
    async with await keyed_client(gateway, make_client_key, sessions, rate_per_minute=5) as client:
        responses = await burst(client, 9)
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) == 5 and len(refused) == 4
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in refused)
    assert "Rate limit of 5 submissions per minute" in refused[0].json()["error"]
    assert (await kie.calls())["createTask"] == 5 and await count_rows(sessions, Task) == 5


async def test_in_flight_limit_holds_and_frees_as_tasks_finish(
    gateway: Gateway, kie: Emulator, make_client_key, sessions
) -> None:
    await kie.set_faults(generate_s=1.0)
    async with await keyed_client(gateway, make_client_key, sessions, max_in_flight=3) as client:
        responses = await burst(client, 7)
        assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 4
        assert {r.headers.get("Retry-After") for r in responses if r.status_code == 429} == {"5"}
        for response in responses:
            if response.status_code == 200:
                await wait_for_state(client, response.json()["taskId"], {"success"})
        assert (await client.post("/api/images/generate", json={"prompt": "next"})).status_code == 200
    assert (await kie.calls())["createTask"] == 4


async def test_daily_budget_reserves_then_settles_on_reported_credits(
    gateway: Gateway, kie: Emulator, make_client_key, sessions
) -> None:
    """Each task reserves 20 credits (the estimate) until Kie reports what it cost (4)."""
    await kie.set_faults(generate_s=0.3, credits_per_image=4)
    async with await keyed_client(gateway, make_client_key, sessions, daily_credit_budget=60) as client:
        responses = await burst(client, 6)
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 402]
        assert len(accepted) == 3 and len(refused) == 3
        assert refused[0].json()["error"] == (
            "Daily credit budget of 60 reached: 60 used or reserved, this task reserves 20"
        )
        for response in accepted:
            await wait_for_state(client, response.json()["taskId"], {"success"})
        # 3 × 4 = 12 spent: two more fit (12 + 20 + 20 ≤ 60), a third does not.
        later = await burst(client, 3)
    assert sorted(r.status_code for r in later) == [200, 200, 402]
    assert (await kie.calls())["createTask"] == 5


async def test_burst_of_100_never_trips_kies_create_rate_limit(
    start_gateway: StartGateway, kie: Emulator, client_of, sessions
) -> None:
    """Kie takes 20 new tasks per 10 s and refuses the rest; imagehook queues instead. The window is
    5 s here, on both sides: the same rule, twice as fast. No shorter: a create still in flight holds
    its place only while its window lasts, and one may take up to upstream_timeout_s (5 s here)."""
    window_s = 5
    await kie.set_faults(generate_s=0.1, create_rate_limit=[20, window_s])
    # A hundred submissions at once share a pool of 20 connections: on a busy machine a wait for one
    # can pass the default 5 s bound (a 503), which is not what this test is about.
    gateway = await start_gateway(
        kie_create_limit=20, kie_create_window_s=window_s, task_timeout_s=300, database_timeout_s=30
    )
    async with client_of(gateway) as client:
        client.timeout = httpx.Timeout(30)  # a hundred submissions at once, on a machine that may be busy
        responses = await burst(client, 100)
        assert {r.status_code for r in responses} == {200}
        task_ids = [r.json()["taskId"] for r in responses]

        async def finished() -> int:
            async with sessions() as session:
                stmt = select(Task.state).where(Task.id.in_(task_ids))
                return sum(state == "success" for state in (await session.execute(stmt)).scalars())

        assert await wait_until(finished, lambda n: n == 100, timeout=90) == 100
    calls = await kie.calls()
    assert calls["rateLimited"] == 0
    assert calls["createTask"] == 100


async def test_purge_deletes_old_finished_tasks_and_their_records(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, sessions
) -> None:
    # A deadline past the backdating below, or the sweeper would rightly fail the old unfinished task.
    gateway = await start_gateway(task_timeout_s=timedelta(days=100).total_seconds())
    async with client_of(gateway) as client:
        await _purge_old_finished_tasks(gateway, client, kie, sessions)


async def _purge_old_finished_tasks(gateway: Gateway, client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    await kie.set_faults(generate_s=0.1)
    old, recent = await submit(client), await submit(client)
    await kie.set_faults(generate_s=60)
    unfinished = await submit(client)
    for task_id in (old, recent):
        await wait_for_state(client, task_id, {"success"})
    async with sessions.begin() as session:
        long_ago = datetime.now(UTC) - timedelta(days=40)
        await session.execute(update(Task).where(Task.id.in_([old, unfinished])).values(created_at=long_ago))
    # The database is shared with earlier tests, which may have left old finished tasks of their own.
    due = await _rows_hanging_off_old_finished_tasks(sessions, datetime.now(UTC) - timedelta(days=30))
    assert due["tasks"] >= 1 and due["task_events"] >= 2 and due["callback_events"] >= 1
    async with open_deps(gateway.settings) as deps:
        removed = await purge(deps, timedelta(days=30), batch=1)
    assert {table: removed[table] for table in due} == due
    async with sessions() as session:
        remaining = set((await session.execute(select(Task.id))).scalars())
        events = set((await session.execute(select(TaskEvent.task_id))).scalars())
        inbox = set((await session.execute(select(CallbackEvent.task_id))).scalars())
    assert remaining == {recent, unfinished}  # unfinished tasks are never purged
    assert old not in events and old not in inbox
    assert (await client.get("/api/images/status", params={"taskId": old})).status_code == 404


async def _rows_hanging_off_old_finished_tasks(sessions, cutoff: datetime) -> dict[str, int]:
    async with sessions() as session:
        finished = Task.state.in_([state.value for state in TERMINAL])
        ids = list((await session.execute(select(Task.id).where(Task.created_at < cutoff, finished))).scalars())
        events = await session.scalar(select(func.count()).select_from(TaskEvent).where(TaskEvent.task_id.in_(ids)))
        aged = or_(CallbackEvent.task_id.in_(ids), CallbackEvent.received_at < cutoff)
        inbox = await session.scalar(select(func.count()).select_from(CallbackEvent).where(aged))
    return {"tasks": len(ids), "task_events": events, "callback_events": inbox}


def run_cli(database_url: str, emulator_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KIEAI_API_KEY": EMULATOR_API_KEY,
        "KIEAI_BASE_URL": emulator_url,
        "IMAGEHOOK_SECRET": "cli-secret-0123456789",
    }
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=60)


async def test_operator_commands_show_credits_usage_and_purge(database_url: str, emulator, kie: Emulator) -> None:
    await kie.set_faults(starting_credits=1234.5)
    credits = await asyncio.to_thread(run_cli, database_url, emulator.url, "credits")
    assert credits.returncode == 0 and "1234.5" in credits.stdout
    usage = await asyncio.to_thread(run_cli, database_url, emulator.url, "usage", "--group-by", "model")
    assert usage.returncode == 0 and usage.stdout.splitlines()[-1].split()[:2] == ["total", "0"]
    bad = await asyncio.to_thread(run_cli, database_url, emulator.url, "purge", "--older-than", "soon")
    assert bad.returncode != 0 and "30d" in bad.stderr
    purged = await asyncio.to_thread(run_cli, database_url, emulator.url, "purge", "--older-than", "30d")
    assert purged.returncode == 0 and "nothing" in purged.stdout


@pytest.mark.parametrize("limit_args", [["--rate", "5", "--in-flight", "2"], ["--daily-budget", "100"]])
async def test_keys_limits_command_sets_and_clears_limits(
    database_url: str, emulator, make_client_key, sessions, limit_args: list[str]
) -> None:
    key = await make_client_key("ops")
    result = await asyncio.to_thread(run_cli, database_url, emulator.url, "keys", "limits", str(key.id), *limit_args)
    assert result.returncode == 0, result.stderr
    async with sessions() as session:
        row = await session.get(ApiKey, key.id)
    assert row is not None
    set_values = {name: getattr(row, name) for name in ("rate_per_minute", "max_in_flight", "daily_credit_budget")}
    assert any(value is not None for value in set_values.values())
    cleared = await asyncio.to_thread(
        run_cli,
        database_url,
        emulator.url,
        "keys",
        "limits",
        str(key.id),
        *[a if a.startswith("--") else "0" for a in limit_args],
    )
    assert cleared.returncode == 0 and "None" in cleared.stdout


async def test_readiness_reports_the_kie_balance_without_blocking_on_it(gateway: Gateway, kie: Emulator) -> None:
    await kie.set_faults(starting_credits=777)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        ready = await wait_until(
            lambda: http.get("/readyz"), lambda r: r.json()["kieBalance"]["credits"] is not None, timeout=5
        )
    assert ready.status_code == 200 and ready.json()["kieBalance"]["credits"] == 777
