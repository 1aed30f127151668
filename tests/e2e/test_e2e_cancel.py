"""End to end: canceling tasks (POST /api/images/tasks/{taskId}/cancel), Cancel-After deadlines, and the
place in line of tasks waiting for the upstream create window, against the Kie.ai emulator."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.db import queries
from app.db.tables import Task, TaskEvent, UpstreamSend
from app.deps import open_deps
from app.tasks.cancel import cancel_task
from app.tasks.submit import send_task
from tests.e2e.test_e2e_flow import submit
from tests.e2e.test_e2e_spend import set_limits
from tests.e2e.test_e2e_webhooks import Receiver
from tests.support.clock import SteppedClock
from tests.support.database import callback_verdicts, count_rows, load_task, task_events
from tests.support.gateways import (
    Emulator,
    Gateway,
    StartGateway,
    StartServer,
    gateway_settings,
    wait_for_state,
    without_browser_links,
)
from tests.support.waiting import wait_until

WINDOW = timedelta(seconds=30)


async def cancel(http: httpx.AsyncClient, task_id: str, **kwargs: Any) -> httpx.Response:
    return await http.post(f"/api/images/tasks/{task_id}/cancel", **kwargs)


async def read(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await http.get("/api/images/status", params={"taskId": task_id})
    assert response.status_code == 200, response.text
    return response.json()


async def reserved_and_spent(http: httpx.AsyncClient) -> tuple[float, float]:
    total = (await http.get("/api/usage")).json()["total"]
    return total["reserved"], total["credits"]


def keyed(gateway: Gateway, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"})


async def sent_for(kie: Emulator) -> list[str]:
    """The callback URLs of the creates the emulator received: each names imagehook's task id."""
    return [job["callBackUrl"] for job in await kie.tasks()]


def canceled(status: dict[str, Any], message: str = "Canceled") -> bool:
    return (status["state"], status["failMsg"], status["failCode"]) == ("fail", message, "canceled")


async def test_a_queued_task_canceled_is_never_sent_and_its_reservation_is_freed(
    start_gateway: StartGateway, kie: Emulator, make_client_key, sessions
) -> None:
    clock = SteppedClock()
    gateway = await start_gateway(clock=clock, kie_create_limit=1, kie_create_window_s=WINDOW.total_seconds())
    await kie.set_faults(generate_s=600)
    key = await make_client_key("queued")
    await set_limits(sessions, key.id, daily_credit_budget=40)  # two tasks' reservations, 20 each
    async with keyed(gateway, key.key) as client:
        sent, queued = await submit(client), await submit(client)
        assert (await read(client, queued))["queuePosition"] == 1
        assert (await client.post("/api/images/generate", json={"prompt": "a third"})).status_code == 402
        assert await reserved_and_spent(client) == (40.0, 0.0)

        response = await cancel(client, queued)
        assert response.status_code == 200, response.text
        body = response.json()
        assert canceled(body) and "queuePosition" not in body and "estimatedStartAt" not in body
        assert await read(client, queued) == body
        assert await reserved_and_spent(client) == (20.0, 0.0)
        later = await submit(client)  # the freed reservation lets it in; the window is full, so it waits
        assert (await read(client, later))["queuePosition"] == 1

        clock.advance(WINDOW + timedelta(seconds=1))  # a place frees: the next in line is sent
        await wait_until(kie.calls, lambda calls: calls["createTask"] == 2)
        await asyncio.sleep(0.5)  # sweeper rounds with the window full again
        assert canceled(await read(client, queued))
    urls = await sent_for(kie)
    assert len(urls) == 2 and sent in urls[0] and later in urls[1]
    assert not any(queued in url for url in urls)
    assert [event[:2] for event in await task_events(sessions, queued)] == [("submit", "pending"), ("cancel", "fail")]


async def test_a_task_claimed_for_sending_then_canceled_is_not_sent(
    database_url: str, emulator, kie: Emulator, make_client_key, sessions
) -> None:
    """The sweeper claimed it, then its client canceled it before the create went out."""
    key = await make_client_key("claimed")
    async with open_deps(gateway_settings(database_url, emulator.url, kie_create_limit=0)) as deps:
        async with deps.write() as session:
            task = Task(
                id="ih_claimed",
                api_key_id=key.id,
                provider="kie",
                model="nano-banana-pro",
                request={"model": "nano-banana-pro", "input": {"prompt": "a fox"}},
                state="pending",
                next_check_at=deps.clock(),
                created_at=deps.clock(),
                updated_at=deps.clock(),
            )
            session.add(task)
        async with deps.write() as session:
            (claimed,) = await queries.claim(session, Task.next_check_at, deps.clock(), deps.clock() + WINDOW, 10)
        _, is_canceled = await cancel_task(deps, api_key_id=key.id, task_id=claimed.id)
        await send_task(deps, claimed)
    assert is_canceled and (await kie.calls())["createTask"] == 0
    assert (await load_task(sessions, "ih_claimed")).upstream_id is None


async def test_a_sent_task_is_canceled_at_once_and_its_late_callback_is_kept_with_what_it_cost(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=1.0, credits_per_image=4)
    task_id = await submit(client)
    response = await cancel(client, task_id)
    assert response.status_code == 200 and canceled(response.json())
    assert await reserved_and_spent(client) == (0.0, 0.0)
    # Kie cannot be told to stop: the job finishes and its callback arrives.
    verdicts = await wait_until(lambda: callback_verdicts(sessions, task_id), lambda found: found != [])
    assert verdicts == ["conflict"]
    assert await read(client, task_id) == response.json()  # first terminal wins: still canceled
    events = await task_events(sessions, task_id)
    assert events == [
        ("submit", "pending", "created"),
        ("cancel", "fail", "applied"),
        ("callback", "success", "conflict"),
    ]
    async with sessions() as session:
        stmt = select(TaskEvent.detail).where(TaskEvent.task_id == task_id, TaskEvent.outcome == "conflict")
        (detail,) = (await session.execute(stmt)).scalars()
    assert detail["credits"] == 4 and len(detail["imageUrls"]) == 1
    assert (await load_task(sessions, task_id)).credits == 4
    assert await reserved_and_spent(client) == (0.0, 4.0)  # usage counts what Kie charged


async def test_cancel_answers_409_for_a_finished_task_and_the_same_status_when_repeated(
    gateway: Gateway, client: httpx.AsyncClient, client_of, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=0.1)
    finished = await submit(client)
    done = await wait_for_state(client, finished, {"success"})
    refused = await cancel(client, finished)
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "Task has already finished; only a pending or processing task can be canceled"
    } | (await read(client, finished))
    assert refused.json()["state"] == done["state"] == "success"

    await kie.set_faults(generate_s=600)
    task_id = await submit(client)
    first, second = await cancel(client, task_id), await cancel(client, task_id)
    assert (first.status_code, second.status_code) == (200, 200) and first.json() == second.json()
    assert canceled(first.json())

    async with client_of(gateway) as other:
        assert (await cancel(other, task_id)).json() == {"error": "Task not found"}
        assert (await cancel(other, task_id)).status_code == 404
        assert (await cancel(other, "ih_no_such_task")).status_code == 404
        assert (await cancel(other, "not%20an%20id")).status_code == 400
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        assert (await cancel(anonymous, task_id)).status_code == 401


async def test_the_cookie_cancels_only_with_the_csrf_rule(gateway: Gateway, kie: Emulator, make_key) -> None:
    await kie.set_faults(generate_s=600)
    key = await make_key("browser")
    async with keyed(gateway, key) as client:
        task_id = await submit(client)
    async with httpx.AsyncClient(base_url=gateway.url, cookies={"auth_token": key}) as browser:
        assert (await cancel(browser, task_id)).status_code == 403  # a form could send this cross-site
        assert (await read(browser, task_id))["state"] == "pending"
        response = await cancel(browser, task_id, json={}, headers={"Origin": gateway.url})
        assert response.status_code == 200 and canceled(response.json())


async def test_a_canceled_task_sends_its_webhook_and_feed_event(
    start_gateway: StartGateway, start_server: StartServer, kie: Emulator, make_client_key
) -> None:
    receiver = Receiver(None)
    await start_server(receiver.server)
    gateway = await start_gateway(webhook_allow_private=True)
    await kie.set_faults(generate_s=600)
    key = await make_client_key("hooked")
    async with keyed(gateway, key.key) as client:
        task_id = await submit(client, webhookUrl=receiver.url)
        status = (await cancel(client, task_id)).json()
        (webhook,) = await receiver.wait_for(1)
        assert webhook.json() == {"type": "task.failed", **without_browser_links(status)}

        async def feed() -> list[dict[str, Any]]:
            return (await client.get("/api/images/events")).json()["events"]

        events = await wait_until(feed, lambda found: len(found) == 2)  # PostgreSQL shows events 2 s old
    assert [(e["taskId"], e["state"]) for e in events] == [(task_id, "pending"), (task_id, "fail")]
    assert (events[1]["failMsg"], events[1]["failCode"]) == ("Canceled", "canceled")


async def test_the_sweeper_cancels_tasks_whose_deadline_passed_sent_or_not(
    start_gateway: StartGateway, kie: Emulator, make_key, sessions
) -> None:
    gateway = await start_gateway(kie_create_limit=1, kie_create_window_s=WINDOW.total_seconds())
    await kie.set_faults(generate_s=600)
    async with keyed(gateway, await make_key("deadlines")) as client:
        sent = await submit_with(client, "1s")
        queued = await submit_with(client, "1.5")
        unlimited = await submit(client)
        assert (await read(client, queued))["queuePosition"] == 1
        started = time.monotonic()
        statuses = [await wait_for_state(client, task_id, {"fail"}) for task_id in (sent, queued)]
        assert all(canceled(status, "Deadline passed") for status in statuses)
        assert time.monotonic() - started < 5
        waiting = await read(client, unlimited)
        assert (waiting["state"], waiting["queuePosition"]) == ("pending", 1)  # the canceled one left the line
    urls = await sent_for(kie)
    assert len(urls) == 1 and sent in urls[0]
    assert [event[0] for event in await task_events(sessions, queued)] == ["submit", "deadline"]


async def submit_with(client: httpx.AsyncClient, cancel_after: str) -> str:
    response = await client.post(
        "/api/images/generate", json={"prompt": "a red fox"}, headers={"Cancel-After": cancel_after}
    )
    assert response.status_code == 200, response.text
    return response.json()["taskId"]


async def test_a_bad_cancel_after_is_a_400_and_nothing_is_stored_or_sent(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    for value in ["", "soon", "0", "0.5", "25h", "86401", "-5", "1h30", "5 m", "1m1h", "1e3", "9999999"]:
        response = await client.post("/api/images/generate", json={"prompt": "a"}, headers={"Cancel-After": value})
        assert response.status_code == 400, value
        assert response.json()["error"].startswith("Cancel-After must be a duration from 1s to 24h"), value
    assert await count_rows(sessions, Task) == 0 and (await kie.calls())["createTask"] == 0
    for value in ["1", "30s", "5m", "1h30m", "24h", "1h0m0.5s"]:
        await submit_with(client, value)
    async with sessions() as session:
        tasks = (await session.execute(select(Task).order_by(Task.created_at))).scalars()
        deadlines = [(task.cancel_at - task.created_at).total_seconds() for task in tasks]
    assert deadlines == [1, 30, 300, 5400, 86400, 3600.5]


async def test_queue_positions_are_the_same_on_every_replica_and_go_once_sent(
    start_gateway: StartGateway, kie: Emulator, make_key, sessions
) -> None:
    clock = SteppedClock()
    limits = dict(clock=clock, kie_create_limit=2, kie_create_window_s=WINDOW.total_seconds())
    # One sweeper: with two, which tasks take the places that free would be left to a race between them.
    first, second = await start_gateway(**limits), await start_gateway(**limits, sweep_interval_s=0)
    await kie.set_faults(generate_s=600)
    key = await make_key("replicas")
    async with keyed(first, key) as on_first, keyed(second, key) as on_second:
        task_ids = [await submit(on_first) for _ in range(5)]
        queued = task_ids[2:]
        async with sessions() as session:
            s1, s2 = (await session.execute(select(UpstreamSend.at).order_by(UpstreamSend.at))).scalars()
        expected = [(1, s1 + WINDOW), (2, s2 + WINDOW), (3, s1 + 2 * WINDOW)]  # two places a window
        for replica in (on_first, on_second, on_second):
            places = [await read(replica, task_id) for task_id in queued]
            assert [(p["queuePosition"], p["estimatedStartAt"]) for p in places] == [
                (n, at.isoformat()) for n, at in expected
            ]
        for task_id in task_ids[:2]:
            assert "queuePosition" not in await read(on_second, task_id)

        clock.advance(WINDOW + timedelta(seconds=1))  # both places free: the first two in line are sent
        await wait_until(kie.calls, lambda calls: calls["createTask"] == 4)
        sent_at = time.monotonic()
        for task_id in queued[:2]:
            status = await wait_until(lambda t=task_id: read(on_second, t), lambda s: "queuePosition" not in s)
            assert "queuePosition" not in status and "estimatedStartAt" not in status
        # The one left moved up without a change of its own: its status is cached for a second at most.
        for replica in (on_first, on_second):
            status = await wait_until(lambda r=replica: read(r, queued[2]), lambda s: s["queuePosition"] == 1)
            assert status["queuePosition"] == 1
        assert time.monotonic() - sent_at < 2
