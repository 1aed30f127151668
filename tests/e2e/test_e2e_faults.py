"""End to end: forged callbacks, upstream errors on createTask, timeouts, confirmation."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from app.db.tables import Task
from tests.e2e.test_e2e_flow import submit
from tests.support.clock import SteppedClock
from tests.support.database import callback_verdicts, load_task
from tests.support.gateways import Emulator, StartGateway, market_callback, post_signed, wait_for_state


async def slow_task(client: httpx.AsyncClient, kie: Emulator) -> tuple[str, dict]:
    """A task the emulator will not finish during the test, and its upstream record."""
    await kie.set_faults(generate_s=60)
    task_id = await submit(client)
    (upstream,) = await kie.tasks()
    return task_id, upstream


@pytest.mark.parametrize(
    ("tamper", "verdict"),
    [
        ("token", "rejected:token"),
        ("signature", "rejected:signature"),
        ("timestamp", "rejected:timestamp"),
    ],
)
async def test_forged_callbacks_are_refused_and_change_nothing(
    client: httpx.AsyncClient, kie: Emulator, sessions, tamper: str, verdict: str
) -> None:
    task_id, upstream = await slow_task(client, kie)
    url, body = upstream["callBackUrl"], market_callback(upstream["taskId"], state="success")
    if tamper == "token":
        response = await post_signed(url.rsplit("/", 1)[0] + "/" + "0" * 40, body)
    elif tamper == "signature":
        response = await post_signed(url, body, key="not-the-shared-key")
    else:
        response = await post_signed(url, body, timestamp=int(time.time()) - 301)
    assert response.status_code == 401
    assert "error" in response.json()
    status = (await client.get("/api/images/status", params={"taskId": task_id})).json()
    assert status["state"] == "pending"
    assert await callback_verdicts(sessions, task_id) == [verdict]


async def test_callback_within_the_timestamp_window_is_accepted(client: httpx.AsyncClient, kie: Emulator) -> None:
    task_id, upstream = await slow_task(client, kie)
    body = market_callback(upstream["taskId"], state="success")
    response = await post_signed(upstream["callBackUrl"], body, timestamp=int(time.time()) - 290)
    assert response.status_code == 200
    assert response.json() == {"code": 200, "msg": "success"}
    assert (await client.get("/api/images/status", params={"taskId": task_id})).json()["state"] == "success"


async def test_unsigned_callback_is_refused_when_hmac_is_configured(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    task_id, upstream = await slow_task(client, kie)
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], json=market_callback(upstream["taskId"], "success"))
    assert response.status_code == 401
    assert await callback_verdicts(sessions, task_id) == ["rejected:signature"]


@pytest.mark.parametrize("fault", [{"create_errors": [429]}, {"create_errors": [455]}, {"create_http_errors": [503]}])
async def test_transient_create_failure_is_retried_by_the_sweeper(
    client: httpx.AsyncClient, kie: Emulator, sessions, fault: dict
) -> None:
    await kie.set_faults(generate_s=0.1, **fault)
    task_id = await submit(client)
    task = await load_task(sessions, task_id)
    assert task.state == "pending" and task.upstream_id is None and task.submit_attempts == 1
    status = await wait_for_state(client, task_id, {"success", "fail"}, timeout=15)
    assert status["state"] == "success"
    assert (await kie.calls())["createTask"] == 2


async def test_definitive_rejection_answers_400_with_kie_message(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(create_errors=[402])
    response = await client.post("/api/images/generate", json={"prompt": "a red fox"})
    assert response.status_code == 400
    assert response.json() == {"error": "Kie.ai error: Insufficient credits"}
    assert (await kie.calls())["createTask"] == 1
    assert await kie.tasks() == []
    async with sessions() as session:
        (task,) = (await session.execute(select(Task))).scalars()
    assert (task.state, task.fail_code, task.fail_msg) == ("fail", "402", "Insufficient credits")


async def test_task_that_never_finishes_times_out(start_gateway: StartGateway, kie: Emulator, client_of) -> None:
    clock = SteppedClock()
    gateway = await start_gateway(clock=clock)
    await kie.set_faults(generate_s=60, drop_callbacks=1.0)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        assert (await client.get("/api/images/status", params={"taskId": task_id})).json()["state"] != "fail"
        clock.advance(timedelta(seconds=gateway.settings.task_timeout_s))
        status = await wait_for_state(client, task_id, {"fail"}, timeout=10)
    assert status["state"] == "fail"
    assert status["failMsg"] == "Task timed out"


async def test_slow_create_is_retried_and_completes(start_gateway: StartGateway, kie: Emulator, client_of) -> None:
    """createTask outlives the client timeout: the client still gets its task id at once."""
    gateway = await start_gateway(upstream_timeout_s=0.5)
    await kie.set_faults(generate_s=0.1, create_delay_s=1.0)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        await kie.set_faults(generate_s=0.1)
        status = await wait_for_state(client, task_id, {"success"}, timeout=15)
    assert status["state"] == "success"


async def test_confirm_mode_records_what_record_info_says(
    start_gateway: StartGateway, kie: Emulator, client_of, sessions
) -> None:
    gateway = await start_gateway(callback_confirm=True, stale_after_s=30)
    await kie.set_faults(generate_s=0.1)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        await wait_for_state(client, task_id, {"success"})
        recorded = (await load_task(sessions, task_id)).image_urls
        (upstream,) = await kie.tasks()
        # A correctly signed callback that lies about the result: Kie's HMAC does not cover
        # the body, so in confirm mode only recordInfo decides.
        lie = market_callback(upstream["taskId"], state="fail", failMsg="forged")
        assert (await post_signed(upstream["callBackUrl"], lie)).status_code == 200
        after = await client.get("/api/images/status", params={"taskId": task_id})
    assert after.json()["state"] == "success" and after.json()["failMsg"] is None
    assert (await load_task(sessions, task_id)).image_urls == recorded
    assert recorded[0].endswith(f"/files/{upstream['taskId']}/0.png")
    assert (await kie.calls())["recordInfo"] == 2
    assert await callback_verdicts(sessions, task_id) == ["applied", "duplicate"]
