"""Group commit end to end: concurrent callbacks each land once, with their own verdict."""

from __future__ import annotations

import asyncio

import httpx

from app.db.tables import CallbackEvent
from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts, count_rows
from tests.support.gateways import Emulator, market_callback, post_signed, wait_for_state


async def test_concurrent_callbacks_each_land_once_with_their_own_verdict(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=60)
    task_ids = [await submit(client) for _ in range(12)]
    upstream = {job["callBackUrl"].split("/")[-2]: job for job in await kie.tasks()}
    posts = []
    for n, task_id in enumerate(task_ids):
        job = upstream[task_id]
        body = market_callback(job["taskId"], state="success" if n % 2 else "fail", failMsg="Content policy")
        posts.append(post_signed(job["callBackUrl"], body))
        if n == 0:  # the same callback twice, at the same moment
            posts.append(post_signed(job["callBackUrl"], body))
    forged = upstream[task_ids[1]]["callBackUrl"].rsplit("/", 1)[0] + "/" + "0" * 40
    posts.append(post_signed(forged, market_callback(upstream[task_ids[1]]["taskId"], state="fail")))
    responses = await asyncio.gather(*posts)
    assert [r.status_code for r in responses] == [200] * 13 + [401]
    for n, task_id in enumerate(task_ids):
        status = await wait_for_state(client, task_id, {"success", "fail"}, timeout=2)
        assert status["state"] == ("success" if n % 2 else "fail")
    assert sorted(await callback_verdicts(sessions, task_ids[0])) == ["applied", "duplicate"]
    assert sorted(await callback_verdicts(sessions, task_ids[1])) == ["applied", "rejected:token"]
    assert await count_rows(sessions, CallbackEvent) == 14
