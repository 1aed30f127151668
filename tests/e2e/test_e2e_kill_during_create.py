"""End to end: a gateway killed (SIGKILL) in the middle of a burst of submissions creates no task
twice upstream. A create whose answer was lost may still have been made; its callback carries
imagehook's own task id, so the task is only sent again once that callback is late."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from sqlalchemy import select

from app.db.tables import Task
from tests.support.gateways import Emulator, gateway_env
from tests.support.servers import ProcessServer, ThreadServer, free_port
from tests.support.waiting import wait_until

BURST = 30


async def test_a_gateway_killed_mid_burst_creates_each_task_once_upstream(
    database_url: str, emulator: ThreadServer, kie: Emulator, make_key, sessions
) -> None:
    # Callbacks come 15 s after each create: later than the old re-send (timeout + 5 s), after the
    # restarted gateway is up even on a slow, busy machine (or they would be lost, and a re-send
    # right), and well within the callback window (STALE_AFTER_S).
    await kie.set_faults(generate_s=15, create_delay_s=0.3)
    port = free_port()
    env = gateway_env(
        database_url, emulator.url, port, UPSTREAM_TIMEOUT_S="1", STALE_AFTER_S="25", KIE_CREATE_LIMIT="0"
    )
    first = await asyncio.to_thread(ProcessServer(env, port).start)
    key = await make_key()
    try:
        async with httpx.AsyncClient(base_url=first.url, headers={"Authorization": f"Bearer {key}"}) as http:
            burst = [asyncio.create_task(submit_slowly(http, n)) for n in range(BURST)]
            await asyncio.sleep(0.8)  # some creates answered, some in flight, some not yet begun
            await asyncio.to_thread(first.kill)
            killed_at = time.monotonic()
            second = await asyncio.to_thread(ProcessServer(env, port).start)
            restart_s = time.monotonic() - killed_at
            await asyncio.gather(*burst, return_exceptions=True)
        tasks = await wait_until(lambda: all_tasks(sessions), lambda found: all_finished(found), timeout=60)
    finally:
        first.stop()
        if "second" in locals():
            second.stop()
    assert tasks and all_finished(tasks), [task.state for task in tasks]
    creates = Counter(job["callBackUrl"].split("/")[-2] for job in await kie.tasks())
    duplicates = sum(count - 1 for count in creates.values())
    print(
        f"SIGKILL mid-burst: {len(tasks)} tasks stored, {sum(creates.values())} upstream creates,"
        f" {duplicates} twice; restarted in {restart_s:.1f} s"
    )
    assert duplicates == 0, (f"restarted in {restart_s:.1f} s", creates)
    assert set(creates) == {task.id for task in tasks}
    assert {task.state for task in tasks} == {"success"}


async def submit_slowly(http: httpx.AsyncClient, n: int) -> None:
    await asyncio.sleep(n * 0.05)  # a burst over 1.5 s, so that the kill falls in its middle
    await http.post("/api/images/generate", json={"prompt": f"fox {n}"}, timeout=10)


async def all_tasks(sessions) -> list[Task]:
    async with sessions() as session:
        return list((await session.execute(select(Task))).scalars())


def all_finished(tasks: list[Task]) -> bool:
    return bool(tasks) and all(task.state in ("success", "fail") for task in tasks)
