"""Sweeper rounds timed in process (app.tasks.sweeper.sweep_once) against the bench database.

The round works on probe tasks: in flight, with upstream ids of real emulator jobs that are still
generating, so each check is a real recordInfo call and a reschedule. They fall due an hour from
now and this sweeper's clock runs an hour ahead, so the gateway's own sweeper, running meanwhile
on the real clock, never takes them: every round claims exactly the probe tasks.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import queries
from app.db.tables import Task
from app.deps import Deps, open_deps, utc_now
from app.settings import Settings
from app.tasks.sweeper import BATCH_SIZE, sweep_once
from bench import seed, servers

AHEAD = timedelta(hours=1)


async def time_rounds(
    env: dict[str, str], engine: AsyncEngine, key_id: int, emulator_url: str, rounds: int
) -> tuple[list[float], list[float], Counter[str]]:
    """Milliseconds per sweeper round and per claim query alone, with BATCH_SIZE due tasks; what the rounds did."""
    probe_ids = await seed.add_probe_tasks(engine, key_id, await generating_jobs(emulator_url, BATCH_SIZE))
    round_ms: list[float] = []
    claim_ms: list[float] = []
    done: Counter[str] = Counter()
    async with open_deps(Settings.from_environ(env)) as deps:
        deps.clock = lambda: utc_now() + AHEAD + timedelta(minutes=1)
        for _ in range(rounds):
            await seed.schedule(engine, probe_ids, utc_now() + AHEAD)
            claim_ms.append(await time_claim(deps))
            started = time.perf_counter()
            done += await sweep_once(deps)
            round_ms.append((time.perf_counter() - started) * 1000)
    # Out of the way of later rounds, which would otherwise claim these before their own probes.
    await seed.schedule(engine, probe_ids, utc_now() + seed.NEXT_CHECK_AHEAD)
    return round_ms, claim_ms, done


async def generating_jobs(emulator_url: str, count: int) -> list[str]:
    """Emulator jobs that stay in `generating` for a day and send no callback."""
    auth = {"Authorization": f"Bearer {servers.KIE_API_KEY}"}
    body = {"model": "nano-banana-pro", "input": {"prompt": "sweeper probe"}}
    async with httpx.AsyncClient(base_url=emulator_url, headers=auth) as http:
        (await http.post("/emulator/faults", json={"generate_s": 86400})).raise_for_status()
        try:
            ids = []
            for _ in range(count):
                response = await http.post("/api/v1/jobs/createTask", json=body)
                ids.append(response.raise_for_status().json()["data"]["taskId"])
        finally:
            await http.post("/emulator/faults", json={})
    return ids


async def time_claim(deps: Deps) -> float:
    """The claim query alone: the part of a round that could grow with the table. Rolled back."""
    now = deps.clock()
    async with deps.sessions() as session:
        started = time.perf_counter()
        await queries.claim(session, Task.next_check_at, now, now + timedelta(minutes=5), BATCH_SIZE)
        elapsed = (time.perf_counter() - started) * 1000
        await session.rollback()
    return elapsed
