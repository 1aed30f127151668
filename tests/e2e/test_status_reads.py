"""The freshness promise of status reads, end to end: a read that starts after a callback was answered
never shows the older state, and a change made anywhere else shows within 1 s."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import update

from app.db.tables import Task
from tests.e2e.test_e2e_faults import slow_task
from tests.support.gateways import Emulator, StartGateway, market_callback, post_signed
from tests.support.waiting import wait_until


async def read_status(client: httpx.AsyncClient, task_id: str) -> dict:
    response = await client.get("/api/images/status", params={"taskId": task_id})
    assert response.status_code == 200
    return response.json()


async def test_a_read_after_the_callback_was_answered_never_shows_the_older_state(
    client: httpx.AsyncClient, kie: Emulator
) -> None:
    task_id, upstream = await slow_task(client, kie)
    assert (await read_status(client, task_id))["state"] == "pending"  # now cached
    stop = asyncio.Event()

    async def keep_reading() -> None:  # reads racing the callback keep refilling the cache
        # A client of its own: concurrent requests sharing one httpx pool can wait on each other's
        # connection indefinitely (encode/httpcore#822), which is not what this test is about.
        async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers, timeout=10) as own:
            while not stop.is_set():
                await read_status(own, task_id)

    readers = [asyncio.create_task(keep_reading()) for _ in range(4)]
    await asyncio.sleep(0.1)
    body = market_callback(upstream["taskId"], state="success")
    assert (await post_signed(upstream["callBackUrl"], body)).status_code == 200
    after = await read_status(client, task_id)
    stop.set()
    await asyncio.gather(*readers)
    assert after["state"] == "success" and after["imageUrl"]


async def test_a_change_made_outside_the_gateway_shows_within_a_second(
    client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    """Another process or replica (a separate sweeper, an operator) changes the row directly."""
    task_id, _ = await slow_task(client, kie)
    for _ in range(3):
        assert (await read_status(client, task_id))["state"] == "pending"
    async with sessions.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(state="processing"))
    changed_at = time.monotonic()
    status = await wait_until(lambda: read_status(client, task_id), lambda s: s["state"] == "processing", timeout=3)
    assert status["state"] == "processing" and time.monotonic() - changed_at < 1.0


async def test_a_callback_on_one_replica_shows_on_another_within_a_second(
    start_gateway: StartGateway, kie: Emulator, make_key
) -> None:
    first, second = await start_gateway(), await start_gateway()
    key = await make_key("two-replicas")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=first.url, headers=headers) as on_first:
        async with httpx.AsyncClient(base_url=second.url, headers=headers) as on_second:
            task_id, upstream = await slow_task(on_first, kie)
            for _ in range(3):
                assert (await read_status(on_second, task_id))["state"] == "pending"
            body = market_callback(upstream["taskId"], state="success")
            assert (await post_signed(upstream["callBackUrl"], body)).status_code == 200
            answered_at = time.monotonic()
            status = await wait_until(
                lambda: read_status(on_second, task_id), lambda s: s["state"] == "success", timeout=3
            )
    assert status["state"] == "success" and time.monotonic() - answered_at < 1.0


async def test_another_clients_task_is_not_found_even_when_cached(client: httpx.AsyncClient, kie, client_of, gateway):
    task_id, _ = await slow_task(client, kie)
    await read_status(client, task_id)
    async with client_of(gateway) as other:
        response = await other.get("/api/images/status", params={"taskId": task_id})
    assert response.status_code == 404 and response.json() == {"error": "Task not found"}


async def test_a_read_the_caches_answer_is_the_very_answer_the_route_gives(client: httpx.AsyncClient, kie) -> None:
    """The first read goes through the router and fills the caches; the next ones are answered from
    them past the router (app/api/shortcuts.py): same status, same headers in the same order, same bytes."""
    task_id, _ = await slow_task(client, kie)

    async def answer() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        # One request id for all, so that header too is the same each time.
        response = await client.get("/api/images/status", params={"taskId": task_id}, headers={"X-Request-ID": "r1"})
        headers = [(name, value) for name, value in response.headers.raw if name.lower() not in (b"date", b"server")]
        return response.status_code, headers, response.content

    first = await answer()
    assert first[0] == 200 and (b"content-type", b"application/json") in first[1]
    assert (b"x-request-id", b"r1") in first[1]
    assert [await answer() for _ in range(5)] == [first] * 5


async def test_a_plain_read_past_the_router_is_the_very_answer_the_router_gives(
    client: httpx.AsyncClient, kie, client_of, gateway
) -> None:
    """`?taskId=ID` alone goes past the router (app/api/shortcuts.py: from the caches, else straight to
    the route's endpoint); `?taskId=ID&` means the same to the route but goes through the router."""
    task_id, _ = await slow_task(client, kie)

    async def answer(http: httpx.AsyncClient, query: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        response = await http.get(f"/api/images/status?{query}", headers={"X-Request-ID": "r1"})
        headers = [(name, value) for name, value in response.headers.raw if name.lower() not in (b"date", b"server")]
        return response.status_code, headers, response.content

    async with client_of(gateway) as other, httpx.AsyncClient(base_url=str(client.base_url)) as keyless:
        cases = [
            (client, task_id, 200),
            (other, task_id, 404),  # someone else's
            (client, "ih_" + "A" * 22, 404),  # nobody's: never cached, so always the endpoint's own answer
            (keyless, task_id, 401),
        ]
        for http, asked, status in cases:
            past_the_router = await answer(http, f"taskId={asked}")
            through_the_router = await answer(http, f"taskId={asked}&")
            assert past_the_router == through_the_router and past_the_router[0] == status, (asked, status)
