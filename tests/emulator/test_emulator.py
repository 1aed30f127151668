"""Tests of the Kie emulator on its own: wire format, faults, and callbacks to a real HTTP receiver."""

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from app.emulator import Faults, create_emulator, images
from app.providers.kie import signature as kie_signature
from tests.support.emulated import API_KEY, HMAC_KEY
from tests.support.waiting import wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}
RECORD_KEYS = {
    "taskId", "model", "state", "param", "resultJson", "failCode", "failMsg",
    "costTime", "createTime", "updateTime", "completeTime", "creditsConsumed",
}  # fmt: skip
COUNTERS = (
    "createTask", "recordInfo", "gpt4oGenerate", "gpt4oRecordInfo", "fluxGenerate", "fluxRecordInfo",
    "kvidGenerate", "kvidStatus", "kvidResult", "upload", "credit", "rateLimited", "fileDownloads",
)  # fmt: skip
NO_CALLS = {**dict.fromkeys(COUNTERS, 0), "recordInfoByTask": {}, "fileDownloadsByPath": {}}


async def set_faults(client: httpx.AsyncClient, **fields) -> None:
    response = await client.post("/emulator/faults", json=fields)
    assert response.status_code == 200, response.text


def assert_signed(delivery: dict, task_id: str) -> None:
    """The callback carries a fresh Kie webhook signature over `task_id`."""
    timestamp = delivery["headers"][kie_signature.TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 5
    assert kie_signature.is_valid(HMAC_KEY, task_id, timestamp, delivery["headers"][kie_signature.SIGNATURE_HEADER])


async def fetch_image(client: httpx.AsyncClient, url: str, media_type: str) -> Image.Image:
    """GET a result URL, check its content type, and decode it."""
    response = await client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == media_type
    return Image.open(io.BytesIO(response.content))


def create_body(callback_url: str | None = None, **model_input) -> dict:
    body = {"model": "google/nano-banana", "input": {"prompt": "a red fox", **model_input}}
    if callback_url:
        body["callBackUrl"] = callback_url
    return body


async def create(client: httpx.AsyncClient, body: dict) -> str:
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["code"] == 200, response.json()
    return response.json()["data"]["taskId"]


async def create_dedicated(client: httpx.AsyncClient, path: str, body: dict, prefix: str) -> str:
    """A create on a dedicated API (4o Image, Flux Kontext): its exact answer, and an id of its family's shape."""
    created = await client.post(path, json=body, headers=AUTH)
    task_id = created.json()["data"]["taskId"]
    assert created.json() == {"code": 200, "msg": "success", "data": {"taskId": task_id}}
    assert task_id.startswith(prefix) and len(task_id) == 27
    return task_id


async def failed_callback(client: httpx.AsyncClient, receiver, path: str, body: dict, **faults: Any) -> tuple[str, Any]:
    """A create on `path` that fails upstream: its task id and the body of its signed callback."""
    await set_faults(client, generate_s=0.1, fail_rate=1.0, **faults)
    response = await client.post(path, json=body, headers=AUTH)
    task_id = response.json()["data"]["taskId"]
    assert await wait_until(lambda: receiver.received)
    assert_signed(receiver.received[0], task_id)
    return task_id, receiver.received[0]["body"]


async def record(client: httpx.AsyncClient, task_id: str) -> dict:
    response = await client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 200, response.json()
    return response.json()["data"]


@dataclass(frozen=True)
class Timeline:
    """One API family on the shared timeline (a job of generate_s=10 created at T0): `create` makes the
    job and checks the answer (-> id, body sent); `read` asks for it; `pending` checks each read at
    `pending_at` seconds and tells what it showed, to be `shown`; `done` checks the read at 10 s."""

    create: Callable[[httpx.AsyncClient], Awaitable[tuple[str, dict]]]
    read: Callable[[httpx.AsyncClient, str], Awaitable[dict]]
    pending_at: tuple[float, ...]
    pending: Callable[[dict], Any]
    shown: list[Any]
    done: Callable[[httpx.AsyncClient, dict, str, dict], Awaitable[None]]


T0 = 1_700_000_000.0


async def market_create(client: httpx.AsyncClient) -> tuple[str, dict]:
    body = create_body(aspect_ratio="16:9")
    response = await client.post("/api/v1/jobs/createTask", json=body, headers=AUTH)
    assert response.json()["msg"] == "success"
    task_id = response.json()["data"]["taskId"]
    assert task_id.startswith("task_") and len(task_id) == 29
    return task_id, body


def market_pending(data: dict) -> str:
    assert data["resultJson"] == "" and data["completeTime"] is None
    return data["state"]


async def market_done(client: httpx.AsyncClient, data: dict, task_id: str, body: dict) -> None:
    assert set(data) == RECORD_KEYS
    assert data["state"] == "success" and data["failCode"] == "" and data["failMsg"] == ""
    assert isinstance(data["param"], str) and json.loads(data["param"]) == body
    assert isinstance(data["resultJson"], str)
    assert json.loads(data["resultJson"]) == {"resultUrls": [f"http://emulator.test/files/{task_id}/0.png"]}
    assert data["costTime"] == 10_000  # milliseconds in recordInfo
    assert (data["createTime"], data["completeTime"]) == (1_700_000_000_000, 1_700_000_010_000)
    assert data["updateTime"] == data["completeTime"] and data["creditsConsumed"] > 0


MARKET_TIMELINE = Timeline(
    market_create,
    record,
    pending_at=(0, 2.5, 5, 9.9),
    pending=market_pending,
    shown=["waiting", "queuing", "generating", "generating"],
    done=market_done,
)


async def test_record_info_errors(emulator):
    _, client = emulator
    missing = await client.get("/api/v1/jobs/recordInfo", headers=AUTH)
    assert missing.json() == {"code": 400, "msg": "taskId is required"}
    unknown = await client.get("/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=AUTH)
    assert unknown.json() == {"code": 404, "msg": "task not found"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
async def test_wrong_or_missing_key_is_refused_in_the_body(emulator, headers):
    store, client = emulator
    denied = {"code": 401, "msg": "You do not have access permissions"}
    created = await client.post("/api/v1/jobs/createTask", json=create_body(), headers=headers)
    assert created.status_code == 200 and created.json() == denied
    polled = await client.get("/api/v1/jobs/recordInfo", params={"taskId": "task_x"}, headers=headers)
    assert polled.status_code == 200 and polled.json() == denied
    assert store.jobs == {}


# Bodies the market createTask refuses with a 422, and the field each answer names.
MARKET_INVALID_BODIES = [
    ({"input": {"prompt": "x"}}, "model"),
    ({"model": 3, "input": {"prompt": "x"}}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": ["x"]}, "input"),
    ({"model": "m", "input": {}}, "input.prompt"),
    ({"model": "m", "input": {"prompt": "  "}}, "input.prompt"),
    ({"model": "m", "input": {"prompt": "x"}, "callBackUrl": "ftp://x"}, "callBackUrl"),
]


async def test_queued_create_errors_are_consumed_one_per_call(emulator):
    store, client = emulator
    await set_faults(client, create_http_errors=[503], create_errors=[429, 402])
    post = {"url": "/api/v1/jobs/createTask", "json": create_body(), "headers": AUTH}
    http_error = await client.post(**post)
    assert http_error.status_code == 503 and http_error.text == "503 Service Unavailable"
    assert (await client.post(**post)).json() == {"code": 429, "msg": "Rate limited"}
    assert (await client.post(**post)).json() == {"code": 402, "msg": "Insufficient credits"}
    assert len(store.jobs) == 0
    await create(client, create_body())
    assert len(store.jobs) == 1
    faults = (await client.get("/emulator/faults")).json()
    assert faults["create_errors"] == [] and faults["create_http_errors"] == []
    assert (await client.get("/emulator/calls")).json()["createTask"] == 4


async def test_signed_success_callback_in_market_format(emulator, receiver):
    store, client = emulator
    await set_faults(client, generate_s=0.2)
    body = create_body(receiver.url)
    task_id = await create(client, body)
    assert await wait_until(lambda: store.jobs[task_id].deliveries)  # recorded once the receiver has answered
    callback = receiver.received[0]["body"]
    assert callback["code"] == 200 and callback["msg"] == "Playground task completed successfully."
    data = callback["data"]
    assert set(data) == RECORD_KEYS
    assert data["taskId"] == task_id and data["state"] == "success" and data["model"] == body["model"]
    assert json.loads(data["param"]) == body
    assert json.loads(data["resultJson"])["resultUrls"] == [f"http://emulator.test/files/{task_id}/0.png"]
    assert data["costTime"] == 1  # whole seconds in callbacks, unlike recordInfo's 200 ms
    assert (await record(client, task_id))["costTime"] == 200
    assert_signed(receiver.received[0], task_id)
    tasks = (await client.get("/emulator/tasks")).json()
    assert tasks[0]["deliveries"][0]["status"] == 200 and tasks[0]["dropped"] is False


async def test_failed_job_callback(emulator, receiver):
    _, client = emulator
    await set_faults(client, generate_s=0.1, fail_rate=1.0, fail_msg="NSFW", fail_code="400")
    task_id = await create(client, create_body(receiver.url))
    assert await wait_until(lambda: receiver.received)
    callback = receiver.received[0]["body"]
    assert (callback["code"], callback["msg"]) == (501, "Playground task failed.")
    data = callback["data"]
    assert (data["state"], data["resultJson"], data["failCode"], data["failMsg"]) == ("fail", "", "400", "NSFW")
    assert data["creditsConsumed"] == 0
    polled = await record(client, task_id)
    assert (polled["state"], polled["failCode"], polled["resultJson"]) == ("fail", "400", "")


async def test_dropped_callback_is_never_sent_but_can_be_redelivered(emulator, receiver):
    _, client = emulator
    await set_faults(client, generate_s=0.1, drop_callbacks=1.0)
    task_id = await create(client, create_body(receiver.url))
    await asyncio.sleep(0.4)
    assert receiver.received == []
    [task] = (await client.get("/emulator/tasks")).json()
    assert task["dropped"] is True and task["state"] == "success" and task["deliveries"] == []
    redelivered = await client.post(f"/emulator/tasks/{task_id}/callback")
    assert redelivered.status_code == 200 and redelivered.json()["status"] == 200
    assert len(receiver.received) == 1


async def test_duplicate_callbacks_are_identical(emulator, receiver):
    store, client = emulator
    await set_faults(client, generate_s=0.1, duplicate_callbacks=2)
    task_id = await create(client, create_body(receiver.url))
    assert await wait_until(lambda: len(store.jobs[task_id].deliveries) == 3)
    assert all(r["body"] == receiver.received[0]["body"] for r in receiver.received)
    assert len(store.jobs[task_id].deliveries) == 3


async def test_callback_before_response_arrives_before_the_task_id(emulator, receiver):
    _, client = emulator
    await set_faults(client, callback_before_response=True)
    task_id = await create(client, create_body(receiver.url))
    # The delivery was awaited, so it is already there when the create response arrives.
    assert [r["body"]["data"]["taskId"] for r in receiver.received] == [task_id]
    assert (await record(client, task_id))["state"] == "success"


async def test_failed_deliveries_are_recorded_and_not_retried(emulator, receiver):
    store, client = emulator
    receiver.status = 500
    await set_faults(client, generate_s=0.05)
    rejected = await create(client, create_body(receiver.url))
    refused = await create(client, create_body("http://127.0.0.1:1/callback"))
    assert await wait_until(lambda: store.jobs[rejected].deliveries and store.jobs[refused].deliveries)
    await asyncio.sleep(0.2)
    assert [d["status"] for d in store.jobs[rejected].deliveries] == [500]
    [failure] = store.jobs[refused].deliveries
    assert "ConnectError" in failure["error"] and isinstance(failure["at"], float)
    assert len(receiver.received) == 1


async def test_redelivery_needs_a_known_terminal_task(emulator, receiver):
    _, client = emulator
    assert (await client.post("/emulator/tasks/task_x/callback")).status_code == 404
    await set_faults(client, generate_s=30)
    task_id = await create(client, create_body(receiver.url))
    assert (await client.post(f"/emulator/tasks/{task_id}/callback")).status_code == 409


async def test_create_delay_still_creates_the_task(emulator):
    store, client = emulator
    await set_faults(client, create_delay_s=1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(create(client, create_body()), 0.1)
    assert len(store.jobs) == 1


async def test_seed_makes_fail_draws_reproducible(emulator):
    _, client = emulator

    async def outcomes() -> list[str]:
        await set_faults(client, generate_s=0, fail_rate=0.5, seed=7)
        ids = [await create(client, create_body()) for _ in range(12)]
        return [(await record(client, task_id))["state"] for task_id in ids]

    first = await outcomes()
    assert set(first) == {"success", "fail"} and await outcomes() == first


@pytest.mark.parametrize(
    ("model_input", "media_type", "pil_format", "ratio"),
    [
        ({"aspect_ratio": "16:9"}, "image/png", "PNG", 16 / 9),
        ({"aspect_ratio": "9:16", "output_format": "jpeg"}, "image/jpeg", "JPEG", 9 / 16),
        ({"image_size": "21:9", "output_format": "jpg"}, "image/jpeg", "JPEG", 21 / 9),
        ({"aspect_ratio": "auto"}, "image/png", "PNG", 1.0),
    ],
)
async def test_result_url_serves_a_real_image(emulator, model_input, media_type, pil_format, ratio):
    _, client = emulator
    await set_faults(client, generate_s=0)
    task_id = await create(client, create_body(**model_input))
    [url] = json.loads((await record(client, task_id))["resultJson"])["resultUrls"]
    image = await fetch_image(client, url, media_type)
    assert image.format == pil_format and max(image.size) == 512
    assert image.width / image.height == pytest.approx(ratio, rel=0.01)
    assert (await client.get(url.rsplit(".", 1)[0] + ".gif")).status_code == 404


@pytest.mark.parametrize(
    ("model_input", "count"),
    [({"num_images": "2"}, 2), ({"max_images": 3}, 3), ({"num_images": 4}, 4), ({"num_images": "x"}, 1), ({}, 1)],
)
async def test_market_result_count_follows_num_images_or_max_images(emulator, model_input, count):
    _, client = emulator
    await set_faults(client, generate_s=0)
    task_id = await create(client, create_body(**model_input))
    urls = json.loads((await record(client, task_id))["resultJson"])["resultUrls"]
    assert urls == [f"http://emulator.test/files/{task_id}/{n}.png" for n in range(count)]
    for url in urls:
        assert (await fetch_image(client, url, "image/png")).size == (512, 512)
    assert (await client.get(f"/files/{task_id}/{count}.png")).status_code == 404


@pytest.mark.parametrize("value", ["1:1", "2:3", "3:2", "4:5", "5:4", "21:9", "1:8", "8:1", "4:1", "1:4"])
def test_rendered_ratio_is_within_one_percent(value):
    width, height = Image.open(io.BytesIO(images.render(images.parse_ratio(value), "png"))).size
    expected_w, expected_h = (int(part) for part in value.split(":"))
    assert width / height == pytest.approx(expected_w / expected_h, rel=0.01)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"bogus": 1}, "bogus"),
        ({"seed": "x"}, "seed"),
        ({"generate_s": float("nan")}, "generate_s"),
        ({"create_errors": [200]}, "create_errors"),
        ({"duplicate_callbacks": True}, "duplicate_callbacks"),
    ],
)
def test_faults_from_dict_names_the_bad_field(bad, field):
    with pytest.raises(ValueError, match=field):
        Faults.from_dict(bad)


def test_faults_from_dict_applies_defaults():
    assert Faults.from_dict({"fail_rate": 0.5, "create_errors": [429]}) == Faults(fail_rate=0.5, create_errors=(429,))


async def test_faults_endpoint_validates_and_applies_defaults(emulator):
    _, client = emulator
    response = await client.post("/emulator/faults", json={"generate_s": -1})
    assert response.status_code == 400 and "generate_s" in response.json()["error"]
    await set_faults(client, generate_s=0.5)
    assert (await client.get("/emulator/faults")).json() == {**Faults().to_dict(), "generate_s": 0.5}


async def test_calls_tasks_and_reset(emulator):
    store, client = emulator
    task_id = await create(client, create_body())
    await client.post("/api/v1/jobs/createTask", json={}, headers=AUTH)
    await record(client, task_id)
    await record(client, task_id)
    calls = (await client.get("/emulator/calls")).json()
    assert calls == {**NO_CALLS, "createTask": 2, "recordInfo": 2, "recordInfoByTask": {task_id: 2}}
    [task] = (await client.get("/emulator/tasks")).json()
    assert task["taskId"] == task_id and task["input"] == {"prompt": "a red fox"} and task["callBackUrl"] is None
    assert task["api"] == "market" and task["model"] == "google/nano-banana"
    await set_faults(client, fail_rate=1.0)
    assert (await client.post("/emulator/reset")).status_code == 200
    assert (await client.get("/emulator/calls")).json() == NO_CALLS
    assert store.jobs == {} and store.faults == Faults()


async def test_lifespan_shutdown_cancels_pending_callbacks(receiver):
    app = create_emulator(api_key=API_KEY, faults=Faults(generate_s=0.3))
    store = app.state.emulator
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as client:
            task_id = await create(client, create_body(receiver.url))
    await asyncio.sleep(0.5)
    assert receiver.received == [] and store.jobs[task_id].deliveries == [] and store.client is None
