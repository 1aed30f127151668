"""What all emulated API families share: one store, one fault queue, one rng, counters and control endpoints."""

import asyncio

import httpx
import pytest

from tests.emulator.test_emulator import (
    AUTH,
    MARKET_INVALID_BODIES,
    MARKET_TIMELINE,
    NO_CALLS,
    T0,
    Timeline,
    create_body,
    set_faults,
)
from tests.emulator.test_emulator_flux import FLUX_INVALID_BODIES, FLUX_TIMELINE
from tests.emulator.test_emulator_gpt4o import GPT4O_INVALID_BODIES, GPT4O_TIMELINE
from tests.emulator.test_emulator_kvid import KVID_TIMELINE
from tests.support.emulated import KVID_KEY
from tests.support.waiting import wait_until

KVID = {"api-key": KVID_KEY}
# One create call per family: (path, body, headers), and how to read the new id from the answer.
CREATES = {
    "market": ("/api/v1/jobs/createTask", create_body(), AUTH),
    "4o": ("/api/v1/gpt4o-image/generate", {"size": "1:1", "prompt": "a fox"}, AUTH),
    "flux-kontext": ("/api/v1/flux/kontext/generate", {"prompt": "a fox"}, AUTH),
    "kvid": ("/ai/generation/text-to-image/generate-async", {"prompt": "a fox"}, KVID),
}
# Every status query endpoint: (family of the job it asks about, path, id parameter, headers).
QUERIES = [
    ("market", "/api/v1/jobs/recordInfo", "taskId", AUTH),
    ("4o", "/api/v1/gpt4o-image/record-info", "taskId", AUTH),
    ("flux-kontext", "/api/v1/flux/kontext/record-info", "taskId", AUTH),
    ("kvid", "/ai/generation/status", "jobId", KVID),
    ("kvid", "/ai/generation/result", "jobId", KVID),
]


async def create_any(client: httpx.AsyncClient, api: str, callback_url: str | None = None) -> httpx.Response:
    path, body, headers = CREATES[api]
    if callback_url:
        body = {**body, "callBackUrl": callback_url}
    return await client.post(path, json=body, headers=headers)


def new_id(response: httpx.Response) -> str:
    data = response.json()["data"]
    return data.get("taskId") or data["job_id"]


@pytest.mark.parametrize(
    "timeline",
    [MARKET_TIMELINE, GPT4O_TIMELINE, FLUX_TIMELINE, KVID_TIMELINE],
    ids=["market", "4o", "flux-kontext", "kvid"],
)
async def test_every_family_walks_the_shared_timeline(emulator, timeline: Timeline):
    store, client = emulator
    now = T0
    store.clock = lambda: now  # step the job through its states without sleeping
    await set_faults(client, generate_s=10)
    task_id, body = await timeline.create(client)
    shown = []
    for elapsed in timeline.pending_at:
        now = T0 + elapsed
        shown.append(timeline.pending(await timeline.read(client, task_id)))
    assert shown == timeline.shown
    now = T0 + 10
    await timeline.done(client, await timeline.read(client, task_id), task_id, body)


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [(CREATES["market"][0], *case) for case in MARKET_INVALID_BODIES]
    + [(CREATES["4o"][0], *case) for case in GPT4O_INVALID_BODIES]
    + [(CREATES["flux-kontext"][0], *case) for case in FLUX_INVALID_BODIES],
)
async def test_an_invalid_kie_create_body_is_a_422_naming_the_problem(emulator, path, body, named):
    store, client = emulator
    response = await client.post(path, json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["code"] == 422 and named in response.json()["msg"]
    assert store.jobs == {}


async def test_every_family_lands_in_one_task_list(emulator):
    _, client = emulator
    ids = {api: new_id(await create_any(client, api, "http://127.0.0.1:1/cb")) for api in CREATES}
    tasks = {task["taskId"]: task for task in (await client.get("/emulator/tasks")).json()}
    assert {api: tasks[task_id]["api"] for api, task_id in ids.items()} == {api: api for api in CREATES}
    assert tasks[ids["market"]]["input"] == {"prompt": "a red fox"}
    assert tasks[ids["4o"]]["input"] == {"size": "1:1", "prompt": "a fox"}  # flat body without callBackUrl
    assert tasks[ids["flux-kontext"]]["model"] == "flux-kontext-pro"
    assert [tasks[ids[api]]["callBackUrl"] for api in CREATES] == ["http://127.0.0.1:1/cb"] * 3 + [None]


async def test_counters_count_each_endpoint_and_every_query_per_task(emulator):
    _, client = emulator
    ids = {api: new_id(await create_any(client, api)) for api in CREATES}
    for api, path, param, headers in QUERIES:
        await client.get(path, params={param: ids[api]}, headers=headers)
    await client.post("/api/file-base64-upload", json={"base64Data": "aGk=", "uploadPath": "x"}, headers=AUTH)
    calls = (await client.get("/emulator/calls")).json()
    assert calls == {
        **NO_CALLS,
        "createTask": 1,
        "gpt4oGenerate": 1,
        "fluxGenerate": 1,
        "kvidGenerate": 1,
        "recordInfo": 1,
        "gpt4oRecordInfo": 1,
        "fluxRecordInfo": 1,
        "kvidStatus": 1,
        "kvidResult": 1,
        "upload": 1,
        "recordInfoByTask": {ids["market"]: 1, ids["4o"]: 1, ids["flux-kontext"]: 1, ids["kvid"]: 2},
    }


async def test_one_create_fault_queue_serves_every_family_in_order(emulator):
    store, client = emulator
    await set_faults(client, create_http_errors=[503], create_errors=[429, 402, 500])
    http_error = await create_any(client, "4o")
    assert http_error.status_code == 503 and http_error.text == "503 Service Unavailable"
    assert (await create_any(client, "flux-kontext")).json() == {"code": 429, "msg": "Rate limited"}
    kvid = await create_any(client, "kvid")
    assert kvid.status_code == 402 and kvid.json()["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert (await create_any(client, "market")).json() == {"code": 500, "msg": "Server error"}
    assert store.jobs == {}
    for api in CREATES:
        assert (await create_any(client, api)).status_code == 200
    assert len(store.jobs) == 4


async def test_unauthorized_creates_do_not_consume_faults(emulator):
    _, client = emulator
    await set_faults(client, create_errors=[429])
    assert (await client.post(CREATES["kvid"][0], json={"prompt": "x"})).status_code == 401
    assert (await client.post(CREATES["4o"][0], json=CREATES["4o"][1])).json()["code"] == 401
    assert (await client.get("/emulator/faults")).json()["create_errors"] == [429]


async def test_seeded_outcomes_are_the_same_whichever_families_draw(emulator):
    _, client = emulator

    async def outcomes(apis: list[str]) -> list[str]:
        await set_faults(client, generate_s=0, fail_rate=0.5, seed=11)
        states = []
        for api in apis:
            task_id = new_id(await create_any(client, api))
            states.append(
                next(t["state"] for t in (await client.get("/emulator/tasks")).json() if t["taskId"] == task_id)
            )
        return states

    first = await outcomes(["market"] * 12)
    assert set(first) == {"success", "fail"}
    assert await outcomes(list(CREATES) * 3) == first


async def test_callback_before_response_and_duplicates_apply_to_dedicated_apis(emulator, receiver):
    store, client = emulator
    await set_faults(client, callback_before_response=True, duplicate_callbacks=1)
    task_id = new_id(await create_any(client, "flux-kontext", receiver.url))
    assert [r["body"]["data"]["taskId"] for r in receiver.received] == [task_id, task_id]
    await set_faults(client, generate_s=0.05, callback_delay_s=0.05)
    task_id = new_id(await create_any(client, "4o", receiver.url))
    assert await wait_until(lambda: store.jobs[task_id].deliveries)
    assert receiver.received[2]["body"]["data"] == {
        "taskId": task_id,
        "info": {"result_urls": [f"http://emulator.test/files/{task_id}/0.png"]},
    }


async def test_dropped_4o_callback_can_be_redelivered(emulator, receiver):
    _, client = emulator
    await set_faults(client, generate_s=0.05, drop_callbacks=1.0)
    task_id = new_id(await create_any(client, "4o", receiver.url))
    await asyncio.sleep(0.3)
    assert receiver.received == []
    redelivered = await client.post(f"/emulator/tasks/{task_id}/callback")
    assert redelivered.status_code == 200 and redelivered.json()["status"] == 200
    assert receiver.received[0]["body"]["code"] == 200 and receiver.received[0]["body"]["data"]["taskId"] == task_id
