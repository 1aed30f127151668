"""End to end: a callback completes only its own task, on every callback route.

The URL token says which imagehook task a callback is for; the body says which upstream task
it reports on. Both must agree with what the task is bound to, or nothing is applied."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.tables import Task, TaskEvent
from app.tasks.submit import callback_token
from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts, load_task
from tests.support.gateways import SECRET, Emulator, Gateway, StartGateway, market_callback, post_signed
from tests.support.waiting import wait_until

IMAGE = "https://images.example.com/input.png"


def market_body(upstream_id: str) -> dict[str, Any]:
    return market_callback(upstream_id, "success")


def gpt4o_body(upstream_id: str) -> dict[str, Any]:
    info = {"result_urls": ["https://example.com/forged.png"]}
    return {"code": 200, "msg": "success", "data": {"taskId": upstream_id, "info": info}}


def flux_body(upstream_id: str) -> dict[str, Any]:
    info = {"resultImageUrl": "https://example.com/forged.png"}
    return {"code": 200, "msg": "success", "data": {"taskId": upstream_id, "info": info}}


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """Tasks here are held in flight on purpose: no sweeper query of a late callback moves them on meanwhile."""
    return await start_gateway(stale_after_s=600)


ROUTES = [
    pytest.param({}, market_body, id="market"),
    pytest.param({"model": "gpt4o-image"}, gpt4o_body, id="4o"),
    pytest.param({"model": "flux-kontext-pro", "imageInput": [IMAGE]}, flux_body, id="flux-kontext"),
]


async def two_slow_tasks(client: httpx.AsyncClient, kie: Emulator, body: dict) -> list[tuple[str, dict]]:
    await kie.set_faults(generate_s=60)
    task_ids = [await submit(client, **body), await submit(client, **body)]
    upstream = {job["callBackUrl"].split("/")[-2]: job for job in await kie.tasks()}
    return [(task_id, upstream[task_id]) for task_id in task_ids]


@pytest.mark.parametrize(("body", "callback"), ROUTES)
async def test_a_signed_callback_about_another_task_is_refused(
    client: httpx.AsyncClient, kie: Emulator, sessions, body: dict, callback
) -> None:
    (mine, my_job), (other, other_job) = await two_slow_tasks(client, kie, body)
    # Validly signed for the other task's upstream id, sent to this task's callback URL.
    response = await post_signed(my_job["callBackUrl"], callback(other_job["taskId"]))
    assert response.status_code == 409
    assert response.json() == {"error": "Callback names a different upstream task than this task's"}
    unknown = await post_signed(my_job["callBackUrl"], callback("task_not_ours_at_all"))
    assert unknown.status_code == 409
    assert await callback_verdicts(sessions, mine) == ["rejected:upstream-id", "rejected:upstream-id"]
    for task_id in (mine, other):
        task = await load_task(sessions, task_id)
        assert (task.state, task.image_urls) == ("pending", [])
    # The task's own callback still completes it.
    assert (await post_signed(my_job["callBackUrl"], callback(my_job["taskId"]))).status_code == 200
    assert (await load_task(sessions, mine)).state == "success"
    assert (await load_task(sessions, other)).state == "pending"


async def test_an_early_callback_binds_the_upstream_id_it_names(client: httpx.AsyncClient, kie: Emulator, sessions):
    await kie.set_faults(callback_before_response=True)
    task_id = await submit(client)
    (job,) = await kie.tasks()
    task = await load_task(sessions, task_id)
    assert (task.state, task.upstream_id) == ("success", job["taskId"])
    assert await callback_verdicts(sessions, task_id) == ["applied"]


async def test_a_create_answer_naming_another_id_than_an_early_callback_wins(
    client: httpx.AsyncClient, kie: Emulator, gateway, sessions
) -> None:
    """The callback arrives while createTask is still in flight and names an upstream id that the
    create answer then contradicts: the create answer, which the provider gave imagehook itself,
    is the one kept; the disagreement is in the task's history."""
    await kie.set_faults(generate_s=60, create_delay_s=1.5)
    submitting = asyncio.create_task(submit(client))
    rows = await wait_until(lambda: all_tasks(sessions), lambda tasks: len(tasks) == 1)
    (task,) = rows
    url = f"{gateway.url}/callbacks/kie/{task.id}/{callback_token(SECRET, task.id)}"
    assert (await post_signed(url, market_callback("task_named_early", "success"))).status_code == 200
    await submitting
    (job,) = await kie.tasks()
    task = await load_task(sessions, task.id)
    assert (task.state, task.upstream_id) == ("success", job["taskId"])
    async with sessions() as session:
        events = (await session.execute(select(TaskEvent).where(TaskEvent.task_id == task.id))).scalars().all()
    conflict = [event for event in events if event.outcome == "conflict"]
    assert [event.detail for event in conflict] == [
        {"upstreamId": job["taskId"], "boundUpstreamId": "task_named_early"}
    ]


async def all_tasks(sessions) -> list[Task]:
    async with sessions() as session:
        return list((await session.execute(select(Task))).scalars())
