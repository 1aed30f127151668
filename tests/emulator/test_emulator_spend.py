"""The emulator's account-level behaviour and result downloads: Kie's create rate limit, the credit balance,
and result-file faults (content type, size, slow streaming) with their download counters."""

import asyncio
import io
import json
import time
import tracemalloc

import httpx
import pytest
import uvicorn
from PIL import Image

from app.emulator import Faults, create_emulator
from tests.emulator.test_emulator import AUTH, create, create_body, record, set_faults
from tests.emulator.test_emulator_families import KVID, create_any, new_id
from tests.support.emulated import API_KEY, KVID_KEY
from tests.support.waiting import wait_until

CREDIT = "/api/v1/chat/credit"
KIE_APIS = ("market", "4o", "flux-kontext")
START = 1_700_000_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Clock:
    """A settable store clock, so windows and timelines are tested at exact instants without sleeping."""

    def __init__(self, store) -> None:
        self.now = START
        store.clock = lambda: self.now

    def at(self, elapsed: float) -> None:
        self.now = START + elapsed


def refusal(count: int, window_s: int) -> dict:
    return {"code": 429, "msg": f"Rate limited: at most {count} new tasks per {window_s} s"}


async def calls(client: httpx.AsyncClient) -> dict:
    return (await client.get("/emulator/calls")).json()


async def balance(client: httpx.AsyncClient) -> float:
    response = await client.get(CREDIT, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 200 and response.json()["msg"] == "success"
    return response.json()["data"]


async def result_url(client: httpx.AsyncClient, **model_input) -> str:
    """The path of a new market job's first result file (the job must finish at once: generate_s=0)."""
    task_id = await create(client, create_body(**model_input))
    return httpx.URL(json.loads((await record(client, task_id))["resultJson"])["resultUrls"][0]).path


# --- create rate limit ---


async def test_rate_limit_is_shared_by_kie_creates_and_ends_exactly_window_s_later(emulator):
    store, client = emulator
    clock = Clock(store)
    await set_faults(client, create_rate_limit=[3, 10])
    for api in KIE_APIS:  # one of each: the window is per account, not per endpoint
        assert (await create_any(client, api)).json()["code"] == 200
    clock.at(9.999)
    for api in KIE_APIS:
        refused = await create_any(client, api)
        assert refused.status_code == 200 and refused.json() == refusal(3, 10)
    assert len(store.jobs) == 3
    clock.at(10)  # the first three were made exactly window_s ago: they have left the window
    assert [(await create_any(client, api)).json()["code"] for api in KIE_APIS] == [200, 200, 200]
    assert (await create_any(client, "market")).json() == refusal(3, 10)
    counted = await calls(client)
    assert counted["rateLimited"] == 4 and len(store.jobs) == 6
    assert (counted["createTask"], counted["gpt4oGenerate"], counted["fluxGenerate"]) == (4, 3, 3)


async def test_rate_limit_window_slides(emulator):
    store, client = emulator
    clock = Clock(store)
    await set_faults(client, create_rate_limit=[3, 10])
    for elapsed in (0, 4, 8):
        clock.at(elapsed)
        await create(client, create_body())
    clock.at(9)
    assert (await create_any(client, "market")).json()["code"] == 429
    clock.at(10)  # only the create at 0 has left: one slot
    await create(client, create_body())
    clock.at(13.9)  # 4, 8 and 10 are still inside
    assert (await create_any(client, "market")).json()["code"] == 429
    clock.at(14)
    await create(client, create_body())
    assert len(store.jobs) == 5 and (await calls(client))["rateLimited"] == 2


async def test_only_accepted_kie_creates_fill_the_window(emulator):
    store, client = emulator
    Clock(store)
    await set_faults(client, create_rate_limit=[1, 10], create_errors=[500])
    assert (await create_any(client, "market")).json()["code"] == 500  # a queued fault is not an accepted create
    assert (await client.post("/api/v1/jobs/createTask", json={}, headers=AUTH)).json()["code"] == 422
    assert (await client.post("/api/v1/jobs/createTask", json=create_body())).json()["code"] == 401
    for _ in range(3):  # kvid.ai is another service with its own account and limits
        assert (await create_any(client, "kvid")).status_code == 200
    await create(client, create_body())
    await set_faults(client, create_rate_limit=[1, 10], create_errors=[500])
    assert (await create_any(client, "4o")).json() == refusal(1, 10)  # the window outlives a faults change
    assert (await client.get("/emulator/faults")).json()["create_errors"] == [500]  # and the fault is kept
    assert (await calls(client))["rateLimited"] == 1


BAD_VALUES = [
    ("create_rate_limit", [20]), ("create_rate_limit", [20, 10, 1]), ("create_rate_limit", [0, 10]),
    ("create_rate_limit", [20, -1]), ("create_rate_limit", [20, 1.5]), ("create_rate_limit", [True, 10]),
    ("create_rate_limit", "20/10"), ("starting_credits", -1), ("credits_per_image", "4"),
    ("result_content_type", ""), ("result_content_type", "text/html\r\nX-Injected: 1"),
    ("result_size_bytes", -1), ("result_size_bytes", 1.5), ("result_delay_s", float("inf")),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_new_fault_fields_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        Faults.from_dict({field: value})


async def test_rate_limit_round_trips_as_a_list_and_is_off_by_default(emulator):
    _, client = emulator
    for _ in range(25):
        assert (await create_any(client, "flux-kontext")).json()["code"] == 200
    await set_faults(client, create_rate_limit=[20, 10])
    assert (await client.get("/emulator/faults")).json()["create_rate_limit"] == [20, 10]
    assert Faults.from_dict({"create_rate_limit": [20, 10]}) == Faults(create_rate_limit=(20, 10))
    assert (await calls(client))["rateLimited"] == 0


# --- credits ---


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, KVID])
async def test_credit_needs_the_kie_key(emulator, headers):
    _, client = emulator
    response = await client.get(CREDIT, headers=headers)
    assert response.status_code == 200 and response.json() == {"code": 401, "msg": "You do not have access permissions"}
    assert (await calls(client))["credit"] == 1


async def test_default_balance_and_price(emulator):
    _, client = emulator
    assert await balance(client) == 10000
    await set_faults(client, generate_s=0)
    task_id = await create(client, create_body(num_images="2"))
    assert (await record(client, task_id))["creditsConsumed"] == 8  # 4 per image
    assert await balance(client) == 10000 - 8
    assert (await calls(client))["credit"] == 2


async def test_balance_falls_by_each_success_when_it_succeeds(emulator):
    store, client = emulator
    clock = Clock(store)
    await set_faults(client, generate_s=10, fail_rate=1.0)
    failing = await create(client, create_body(num_images=3))
    # Setting faults starts a new balance; the failing job is still running, so it belongs to the new one.
    await set_faults(client, generate_s=10, starting_credits=100, credits_per_image=2.5)
    market = await create(client, create_body(num_images=2))  # 5
    await create_any(client, "4o")  # 2.5
    await create_any(client, "flux-kontext")  # 2.5
    kvid = new_id(await create_any(client, "kvid"))  # billed by kvid.ai, not Kie
    assert await balance(client) == 100  # nothing has finished yet
    clock.at(10)
    assert await balance(client) == 90
    assert (await record(client, market))["creditsConsumed"] == 5
    assert (await record(client, failing))["creditsConsumed"] == 0
    result = await client.get("/ai/generation/result", params={"jobId": kvid}, headers=KVID)
    assert result.json()["data"]["used_credit"] == 2.5


async def test_posting_faults_or_resetting_restarts_the_balance(emulator):
    store, client = emulator
    clock = Clock(store)
    await set_faults(client, generate_s=10, starting_credits=50)
    await create(client, create_body())
    clock.at(10)
    late = await create(client, create_body())  # finishes at 20, after the next faults change
    assert await balance(client) == 46
    await set_faults(client, generate_s=10, starting_credits=50)
    assert await balance(client) == 50  # the first success was charged to the old balance
    clock.at(20)
    assert await balance(client) == 46 and store.jobs[late].phase(clock.now)[0] == "success"
    await client.post("/emulator/reset")
    assert await balance(client) == 10000


# --- result files ---


async def test_content_type_fault_serves_a_page_or_relabels_the_image(emulator):
    _, client = emulator
    await set_faults(client, generate_s=0)
    before = await result_url(client)  # faults are a per-job snapshot: this one keeps serving its image
    await set_faults(client, generate_s=0, result_content_type="text/html")
    page = await client.get(await result_url(client))
    assert page.status_code == 200 and page.headers["content-type"] == "text/html"
    assert page.content.startswith(b"<!doctype html>") and int(page.headers["content-length"]) == len(page.content)
    await set_faults(client, generate_s=0, result_content_type="image/webp")
    relabelled = await client.get(await result_url(client))
    assert relabelled.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(relabelled.content)).format == "PNG"
    kept = await client.get(before)
    assert kept.headers["content-type"] == "image/png" and kept.content.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("size", [100, 3_000_000])
async def test_size_fault_serves_exactly_that_many_bytes_behind_a_real_header(emulator, size):
    _, client = emulator
    await set_faults(client, generate_s=0, result_size_bytes=size)
    served = await client.get(await result_url(client, aspect_ratio="16:9"))
    assert len(served.content) == size == int(served.headers["content-length"])
    assert served.content.startswith(PNG_SIGNATURE) and served.headers["content-type"] == "image/png"
    if size > 100:  # padded: still a whole, decodable image
        image = Image.open(io.BytesIO(served.content))
        image.load()
        assert image.size == (512, 288)


async def test_kvid_result_reports_the_served_size(emulator):
    _, client = emulator
    await set_faults(client, generate_s=0, result_size_bytes=12_345)
    job_id = new_id(await create_any(client, "kvid"))
    data = (await client.get("/ai/generation/result", params={"jobId": job_id}, headers=KVID)).json()["data"]
    assert data["size"] == 12_345 == len((await client.get(data["result_url"])).content)


async def test_downloads_are_counted_per_path(emulator):
    _, client = emulator
    await set_faults(client, generate_s=0)
    path = await result_url(client)
    for url in (path, path, path.replace("/0.", "/1."), "/files/task_unknown/0.png"):
        await client.get(url)
    await client.get("/files/uploads/x/y.png")  # an upload, not a result file
    await client.head(path)  # downloads nothing
    counted = await calls(client)
    assert counted["fileDownloads"] == 4
    assert counted["fileDownloadsByPath"] == {path: 2, path.replace("/0.", "/1."): 1, "/files/task_unknown/0.png": 1}


@pytest.fixture
async def served():
    """The emulator under a real uvicorn server: unlike ASGITransport, it streams bodies as they are sent."""
    app = create_emulator(api_key=API_KEY, kvid_api_key=KVID_KEY)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", ws="none")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    assert await wait_until(lambda: server.started)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    async with httpx.AsyncClient(base_url=url) as client:
        yield client
    server.should_exit = True
    await serving


async def test_slow_result_arrives_over_the_delay_and_can_be_abandoned(served):
    client = served
    await set_faults(client, generate_s=0, result_delay_s=1.0, result_size_bytes=200_000)
    path = await result_url(client)
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    async with client.stream("GET", path) as response:
        assert response.headers["content-length"] == "200000"
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic() - started, len(chunk)))
    assert sum(size for _, size in arrivals) == 200_000
    assert arrivals[0][0] < 0.3 and 0.9 <= arrivals[-1][0] < 2.0  # starts at once, ends after about the delay
    halfway = sum(size for at, size in arrivals if at < 0.5)
    assert 0 < halfway < 200_000
    async with client.stream("GET", path) as response:  # a client killed mid-download
        await response.aiter_raw().__anext__()
    assert (await client.get("/emulator/calls")).json()["fileDownloadsByPath"] == {path: 2}


async def test_a_60_mb_result_is_streamed_not_held_in_memory(served):
    client = served
    size = 60 * 1024 * 1024
    await set_faults(client, generate_s=0, result_size_bytes=size)
    path = await result_url(client)
    received = 0
    tracemalloc.start()
    try:
        async with client.stream("GET", path) as response:
            async for chunk in response.aiter_raw():
                received += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == size and peak < 8 * 1024 * 1024
