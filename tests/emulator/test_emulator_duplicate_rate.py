"""The emulator's duplicate_rate fault: a share of jobs has its callback delivered twice."""

import asyncio
import json

import httpx
import pytest

from app.emulator import Faults, create_emulator

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CALLBACK_URL = "http://receiver.test/callback"


@pytest.fixture
async def emulator():
    """The emulator app in process; its callbacks go to an in-memory receiver (the list yielded last)."""
    app = create_emulator(api_key=API_KEY)
    store, received = app.state.emulator, []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(200, json={"code": 200, "msg": "success"})

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.MockTransport(receive)) as callbacks,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.test") as client,
    ):
        store.client = callbacks  # instead of the lifespan's real HTTP client
        yield store, client, received


async def set_faults(client: httpx.AsyncClient, **fields) -> None:
    response = await client.post("/emulator/faults", json=fields)
    assert response.status_code == 200, response.text


async def create(client: httpx.AsyncClient, callback_url: str | None = CALLBACK_URL) -> str:
    body = {"model": "google/nano-banana", "input": {"prompt": "a red fox"}}
    if callback_url:
        body["callBackUrl"] = callback_url
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 200, response.text
    return response.json()["data"]["taskId"]


async def wait_for_deliveries(store, expected: int) -> None:
    async with asyncio.timeout(3):
        while sum(len(job.deliveries) for job in store.jobs.values()) < expected:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a delivery beyond `expected` would show up by now


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.5", float("inf")])
def test_duplicate_rate_must_be_a_probability(bad):
    with pytest.raises(ValueError, match="duplicate_rate"):
        Faults.from_dict({"duplicate_rate": bad})


def test_duplicate_rate_defaults_to_zero_and_is_reported():
    assert Faults().duplicate_rate == 0.0
    assert Faults(duplicate_rate=0.25).to_dict()["duplicate_rate"] == 0.25


async def test_rate_one_delivers_every_callback_twice(emulator):
    store, client, received = emulator
    await set_faults(client, generate_s=0.05, duplicate_rate=1.0)
    task_ids = [await create(client) for _ in range(3)]
    await wait_for_deliveries(store, 6)
    assert [len(store.jobs[task_id].deliveries) for task_id in task_ids] == [2, 2, 2]
    for task_id in task_ids:
        first, second = (body for body in received if body["data"]["taskId"] == task_id)
        assert first == second


async def test_duplicate_rate_adds_to_duplicate_callbacks(emulator):
    store, client, _ = emulator
    await set_faults(client, generate_s=0.05, duplicate_callbacks=1, duplicate_rate=1.0)
    task_id = await create(client)
    await wait_for_deliveries(store, 3)
    assert len(store.jobs[task_id].deliveries) == 3


async def test_duplicate_rate_never_revives_a_dropped_callback(emulator):
    store, client, received = emulator
    await set_faults(client, generate_s=0.05, drop_callbacks=1.0, duplicate_rate=1.0)
    task_id = await create(client)
    await asyncio.sleep(0.3)
    assert received == [] and store.jobs[task_id].deliveries == []


async def test_seeded_draws_keep_their_order(emulator):
    """duplicate_rate is drawn after fail_rate and drop_callbacks, so setting it changes no other outcome."""
    store, client, _ = emulator

    async def outcomes(duplicate_rate: float) -> list[tuple[bool, bool, bool]]:
        # Without a callback URL nothing is delivered: only the draws are compared.
        await set_faults(client, generate_s=0, fail_rate=0.5, drop_callbacks=0.5, duplicate_rate=duplicate_rate, seed=3)
        jobs = [store.jobs[await create(client, callback_url=None)] for _ in range(40)]
        return [(job.failed, job.drop_drawn, job.duplicate_drawn) for job in jobs]

    without, half, again = await outcomes(0.0), await outcomes(0.5), await outcomes(0.5)
    assert [o[:2] for o in without] == [o[:2] for o in half]
    assert not any(o[2] for o in without)
    assert half == again and 0 < sum(o[2] for o in half) < 40
