"""End to end: listing a client's tasks, and the catch-up feed of their state changes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.test_e2e_flow import submit
from tests.support.gateways import Emulator, wait_for_state
from tests.support.waiting import wait_until


async def list_all(client: httpx.AsyncClient, **params: object) -> list[dict]:
    response = await client.get("/api/images/tasks", params=params)
    assert response.status_code == 200, response.text
    return response.json()["tasks"]


async def test_listing_pages_newest_first_and_inserts_do_not_shift_pages(
    client: httpx.AsyncClient, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=60)
    created = [await submit(client, prompt=f"fox {n}") for n in range(5)]
    first = (await client.get("/api/images/tasks", params={"limit": 2})).json()
    assert [t["taskId"] for t in first["tasks"]] == created[:-3:-1]
    await submit(client, prompt="a newcomer")  # lands on page one, must not push into page two
    second = (await client.get("/api/images/tasks", params={"limit": 2, "cursor": first["nextCursor"]})).json()
    third = (await client.get("/api/images/tasks", params={"limit": 2, "cursor": second["nextCursor"]})).json()
    assert [t["taskId"] for t in second["tasks"]] == [created[2], created[1]]
    assert [t["taskId"] for t in third["tasks"]] == [created[0]] and third["nextCursor"] is None


async def test_listing_filters_by_state_model_and_time(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.1)
    done = await submit(client)
    await wait_for_state(client, done, {"success"})
    await kie.set_faults(generate_s=60)
    pending = await submit(client, model="google/nano-banana")
    assert [t["taskId"] for t in await list_all(client, state="success")] == [done]
    assert [t["taskId"] for t in await list_all(client, model="google/nano-banana")] == [pending]
    created_at = (await list_all(client, state="success"))[0]["createdAt"]
    assert [t["taskId"] for t in await list_all(client, createdAfter=created_at)] == [pending]


async def test_listing_shows_only_the_callers_tasks(gateway, client: httpx.AsyncClient, client_of, kie) -> None:
    await submit(client)
    async with client_of(gateway) as other:
        assert await list_all(other) == []


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"state": "done"}, "state must be one of: pending, processing, success, fail"),
        ({"limit": "0"}, "limit must be an integer from 1 to 100"),
        ({"cursor": "not-a-cursor"}, "cursor is invalid"),
        ({"createdAfter": "yesterday"}, "createdAfter must be an ISO 8601 date-time"),
        # Given but empty is a bad value too, not the same as leaving the filter out.
        ({"state": ""}, "state must be one of: pending, processing, success, fail"),
        ({"model": ""}, "Unknown model ''; GET /api/images/models lists the supported models"),
        ({"cursor": ""}, "cursor is invalid"),
        ({"createdAfter": ""}, "createdAfter must be an ISO 8601 date-time"),
    ],
)
async def test_listing_rejects_bad_parameters(client: httpx.AsyncClient, params: dict, error: str) -> None:
    response = await client.get("/api/images/tasks", params=params)
    assert response.status_code == 400 and response.json() == {"error": error}


async def read_feed(client: httpx.AsyncClient, after: str = "0") -> dict:
    response = await client.get("/api/images/events", params={"after": after})
    assert response.status_code == 200, response.text
    return response.json()


async def test_feed_lets_a_client_reconcile_every_change_in_order(
    gateway, client: httpx.AsyncClient, client_of, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.1)
    first, second = await submit(client), await submit(client)
    for task_id in (first, second):
        await wait_for_state(client, task_id, {"success"})
    async with client_of(gateway) as other:
        await submit(other)  # someone else's change never shows up in our feed
        feed = await wait_until(lambda: read_feed(client), lambda f: len(f["events"]) == 4)
    events = feed["events"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert {(e["taskId"], e["state"]) for e in events} == {
        (first, "pending"),
        (first, "success"),
        (second, "pending"),
        (second, "success"),
    }
    assert all(e["imageUrls"] for e in events if e["state"] == "success")
    # Resuming from the cursor returns only what is new.
    assert (await read_feed(client, feed["nextCursor"]))["events"] == []
    third = await submit(client)
    later = await wait_until(lambda: read_feed(client, feed["nextCursor"]), lambda f: f["events"])
    assert [(e["taskId"], e["state"]) for e in later["events"]] == [(third, "pending")]


async def test_feed_cursor_must_be_an_event_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/images/events", params={"after": "abc"})
    assert response.status_code == 400


async def test_listing_and_feed_need_a_key(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        responses = await asyncio.gather(anonymous.get("/api/images/tasks"), anonymous.get("/api/images/events"))
    assert [r.status_code for r in responses] == [401, 401]
