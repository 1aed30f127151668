"""End to end: idempotent submission, and waiting without polling (wait=, Prefer: wait, SSE)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from app.db.tables import Task
from tests.e2e.test_e2e_flow import submit
from tests.support.database import count_rows
from tests.support.gateways import Emulator, StartGateway, gateway_env
from tests.support.servers import ProcessServer, free_port
from tests.support.waiting import wait_until

BODY = {"prompt": "a red fox", "aspectRatio": "1:1"}


async def generate(client: httpx.AsyncClient, key: str | None, body: dict = BODY) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/api/images/generate", json=body, headers=headers)


async def test_retried_submission_with_the_same_key_returns_the_same_task(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=60)
    first = await generate(client, "order-42")
    again = await generate(client, "order-42", {"aspectRatio": "1:1", "prompt": "a red fox"})  # key order differs
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = await generate(client, "order-43")
    assert other.json()["taskId"] != first.json()["taskId"]
    assert (await kie.calls())["createTask"] == 2 and await count_rows(sessions, Task) == 2


async def test_same_key_with_a_different_body_is_a_409(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    await kie.set_faults(generate_s=60)
    assert (await generate(client, "k1")).status_code == 200
    conflict = await generate(client, "k1", {"prompt": "a blue fox"})
    assert conflict.status_code == 409
    assert conflict.json() == {"error": "Idempotency-Key was already used with a different request"}
    assert (await kie.calls())["createTask"] == 1 and await count_rows(sessions, Task) == 1


async def test_keys_belong_to_one_client(gateway, client: httpx.AsyncClient, client_of, kie: Emulator) -> None:
    await kie.set_faults(generate_s=60)
    mine = (await generate(client, "shared-name")).json()["taskId"]
    async with client_of(gateway) as other:
        theirs = (await generate(other, "shared-name")).json()["taskId"]
    assert mine != theirs


@pytest.mark.parametrize("key", ["", "x" * 256, "bad key with spaces"])
async def test_malformed_idempotency_key_is_a_400(client: httpx.AsyncClient, kie: Emulator, key: str) -> None:
    response = await client.post("/api/images/generate", json=BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]
    assert (await kie.calls())["createTask"] == 0


async def test_concurrent_retries_make_one_task_across_replicas(
    start_gateway: StartGateway, client_of, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=60, create_delay_s=0.2)
    replicas = [await start_gateway(), await start_gateway()]
    async with client_of(replicas[0]) as first:
        # The same client (one key) retrying through both replicas at once.
        headers = dict(first.headers)
        async with httpx.AsyncClient(base_url=replicas[1].url, headers=headers) as second:
            responses = await asyncio.gather(*(generate(c, "burst-1") for c in [first, second] * 5))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["taskId"] for r in responses}) == 1
    assert (await kie.calls())["createTask"] == 1 and await count_rows(sessions, Task) == 1


async def test_status_wait_answers_as_soon_as_the_task_finishes(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.5)
    task_id = await submit(client)
    started = time.monotonic()
    body = (await client.get("/api/images/status", params={"taskId": task_id, "wait": 20}, timeout=30)).json()
    elapsed = time.monotonic() - started
    assert body["state"] == "success"
    assert elapsed < 2.0  # the callback lands at ~0.5 s; the waiter wakes with it, not at 20 s


async def test_status_wait_returns_the_current_state_when_time_is_up(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=60)
    task_id = await submit(client)
    started = time.monotonic()
    body = (await client.get("/api/images/status", params={"taskId": task_id, "wait": 1})).json()
    assert body["state"] == "pending"
    assert 0.9 <= time.monotonic() - started < 3


@pytest.mark.parametrize("wait", ["61", "-1", "soon"])
async def test_wait_out_of_range_is_a_400(client: httpx.AsyncClient, kie: Emulator, wait: str) -> None:
    task_id = await submit(client)
    response = await client.get("/api/images/status", params={"taskId": task_id, "wait": wait})
    assert response.status_code == 400
    assert response.json() == {"error": "wait must be a number of seconds from 0 to 60"}


async def test_prefer_wait_on_generate_returns_the_finished_task(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.3)
    response = await client.post("/api/images/generate", json=BODY, headers={"Prefer": "wait=20"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=20"
    body = response.json()
    assert body["state"] == "success" and body["taskId"].startswith("ih_") and body["imageUrl"]


async def read_sse(client: httpx.AsyncClient, task_id: str) -> list[dict]:
    events = []
    async with client.stream("GET", f"/api/images/tasks/{task_id}/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def test_sse_streams_each_change_and_closes_at_the_terminal_state(
    client: httpx.AsyncClient, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.5, drop_callbacks=1.0)  # the sweeper sees processing, then success
    task_id = await submit(client)
    events = await read_sse(client, task_id)
    states = [event["state"] for event in events]
    assert states[0] == "pending" and states[-1] == "success"
    assert len(states) == len(set(states))  # one event per change, no repeats
    assert events[-1]["imageUrl"]


async def test_sse_for_another_clients_task_is_a_404(gateway, client: httpx.AsyncClient, client_of, kie) -> None:
    task_id = await submit(client)
    async with client_of(gateway) as other:
        response = await other.get(f"/api/images/tasks/{task_id}/events")
    assert response.status_code == 404


async def test_a_callback_on_one_replica_wakes_a_waiter_on_another_within_a_second(
    database_url: str, emulator, gateway, client: httpx.AsyncClient, kie: Emulator
) -> None:
    """The callback lands on the replica that created the task; the waiter sits on a second
    gateway process (LISTEN/NOTIFY on PostgreSQL, the short re-check on SQLite)."""
    port = free_port()
    env = gateway_env(database_url, emulator.url, port, SWEEP_INTERVAL_S="0")
    other = await asyncio.to_thread(ProcessServer(env, port).start)
    try:
        await kie.set_faults(generate_s=1.5)
        task_id = await submit(client)
        async with httpx.AsyncClient(base_url=other.url, headers=client.headers) as on_other:
            waiter = asyncio.create_task(
                on_other.get("/api/images/status", params={"taskId": task_id, "wait": 30}, timeout=40)
            )
            response = await waiter
            answered_at = time.time()
        assert response.json()["state"] == "success"
        (upstream,) = await wait_until(kie.tasks, lambda t: t and t[0]["deliveries"])
        delivery = upstream["deliveries"][0]
        assert delivery["status"] == 200
        assert answered_at - delivery["at"] < 1.0
    finally:
        await asyncio.to_thread(other.stop)
