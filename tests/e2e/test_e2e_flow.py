"""End to end over loopback HTTP: gateway and Kie.ai emulator as real uvicorn servers."""

from __future__ import annotations

import asyncio

import httpx

from app.db.tables import CallbackEvent
from tests.support.database import callback_verdicts, count_rows, load_task, task_events
from tests.support.gateways import Emulator, market_callback, post_signed, wait_for_state
from tests.support.waiting import wait_until


async def test_happy_path_callback_completes_task_without_any_query(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.2)
    response = await client.post("/api/images/generate", json={"prompt": "a lighthouse at dawn"})
    assert response.status_code == 200, response.text
    task_id = response.json()["taskId"]

    status = await wait_for_state(client, task_id, {"success"})
    assert status["state"] == "success"
    assert status["imageUrl"] == status["imageUrls"][0]
    assert status["model"] == "nano-banana-pro"
    assert status["failMsg"] is None
    assert isinstance(status["costTime"], int) and status["costTime"] >= 0
    image = await client.get(status["imageUrl"])  # the provider's URL, or imagehook's copy once made
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")

    (upstream,) = await kie.tasks()
    assert upstream["input"] == {
        "prompt": "a lighthouse at dawn",
        "aspect_ratio": "16:9",
        "resolution": "2K",
        "output_format": "png",
    }
    assert upstream["model"] == "nano-banana-pro"
    calls = await kie.calls()
    assert calls["createTask"] == 1 and calls["recordInfo"] == 0
    assert await callback_verdicts(sessions, task_id) == ["applied"]
    assert [e[1:] for e in await task_events(sessions, task_id)] == [("pending", "created"), ("success", "applied")]
    assert (await load_task(sessions, task_id)).upstream_id == upstream["taskId"]
    assert await count_rows(sessions, CallbackEvent) == 1


async def submit(client: httpx.AsyncClient, **body: object) -> str:
    response = await client.post("/api/images/generate", json={"prompt": "a red fox", **body})
    assert response.status_code == 200, response.text
    return response.json()["taskId"]


def result_of(status: dict) -> dict:
    """What a task's result is, apart from where its images are served (which moves to
    imagehook's own copy in the background)."""
    return {key: status[key] for key in ("taskId", "state", "failMsg", "costTime", "model", "createdAt")} | {
        "images": len(status["imageUrls"])
    }


async def test_lost_callback_is_recovered_by_one_record_info_query(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.2, drop_callbacks=1.0)
    task_id = await submit(client)
    assert (await wait_for_state(client, task_id, {"success"}))["state"] == "success"
    await asyncio.sleep(0.5)  # a few more sweeper rounds: a finished task is never queried again
    calls = await kie.calls()
    assert calls["createTask"] == 1
    assert calls["recordInfo"] == 1
    assert await callback_verdicts(sessions, task_id) == []
    assert [e[0] for e in await task_events(sessions, task_id)] == ["submit", "sweep"]


async def test_duplicate_callbacks_are_answered_200_and_change_nothing(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.1, duplicate_callbacks=2)
    task_id = await submit(client)
    first = await wait_for_state(client, task_id, {"success"})
    await wait_until(lambda: callback_verdicts(sessions, task_id), lambda v: len(v) == 3)
    assert await callback_verdicts(sessions, task_id) == ["applied", "duplicate", "duplicate"]
    (upstream,) = await kie.tasks()
    assert [d.get("status") for d in upstream["deliveries"]] == [200, 200, 200]
    assert result_of(await wait_for_state(client, task_id, {"success"})) == result_of(first)


async def test_late_conflicting_and_stale_callbacks_never_move_a_finished_task(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.1)
    task_id = await submit(client)
    done = await wait_for_state(client, task_id, {"success"})
    (upstream,) = await kie.tasks()
    stale = market_callback(upstream["taskId"], state="generating")
    conflicting = market_callback(upstream["taskId"], state="fail", failMsg="late failure")
    for body in (stale, conflicting):
        response = await post_signed(upstream["callBackUrl"], body)
        assert response.status_code == 200, response.text
    assert result_of(await wait_for_state(client, task_id, {"success"})) == result_of(done)
    assert await callback_verdicts(sessions, task_id) == ["applied", "duplicate", "conflict"]
    events = await task_events(sessions, task_id)
    assert events[-1] == ("callback", "fail", "conflict")


async def test_callback_before_create_response_completes_the_task(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(callback_before_response=True)
    task_id = await submit(client)
    # The callback landed before createTask returned: the first read already shows it.
    status = (await client.get("/api/images/status", params={"taskId": task_id})).json()
    assert status["state"] == "success" and status["imageUrl"]
    (upstream,) = await kie.tasks()
    task = await load_task(sessions, task_id)
    assert task.upstream_id == upstream["taskId"]
    assert task.next_check_at is None  # nothing left for the sweeper to do
    assert await callback_verdicts(sessions, task_id) == ["applied"]
    assert (await kie.calls())["recordInfo"] == 0


async def test_upstream_failure_callback_fails_the_task(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.1, fail_rate=1.0, fail_msg="Content policy violation")
    task_id = await submit(client)
    status = await wait_for_state(client, task_id, {"fail"})
    assert status["state"] == "fail"
    assert status["failMsg"] == "Content policy violation"
    assert status["imageUrl"] is None and status["imageUrls"] == []
