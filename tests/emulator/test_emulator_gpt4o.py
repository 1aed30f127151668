"""The emulator's Kie 4o Image API: generate, record-info through the timeline, callbacks, result images."""

import json

import httpx
import pytest

from tests.emulator.test_emulator import (
    AUTH,
    Timeline,
    assert_signed,
    create,
    create_body,
    create_dedicated,
    failed_callback,
    fetch_image,
    set_faults,
)
from tests.support.kie_calls import kie_generate, kie_record
from tests.support.waiting import wait_until

GENERATE = "/api/v1/gpt4o-image/generate"
RECORD_INFO = "/api/v1/gpt4o-image/record-info"
RECORD_KEYS = {
    "taskId", "paramJson", "completeTime", "createTime", "progress", "successFlag", "status",
    "errorCode", "errorMessage", "response",
}  # fmt: skip


def body_4o(callback_url: str | None = None, **fields) -> dict:
    body = {"size": "3:2", "prompt": "a red fox", **fields}
    if callback_url:
        body["callBackUrl"] = callback_url
    return body


async def gpt4o_create(client) -> tuple[str, dict]:
    body = body_4o(nVariants=2, isEnhance=True)
    return await create_dedicated(client, GENERATE, body, "4o_"), body


def gpt4o_pending(data: dict) -> str:
    assert set(data) == RECORD_KEYS
    assert (data["successFlag"], data["status"], data["response"]) == (0, "GENERATING", None)
    assert data["completeTime"] is None and data["errorCode"] is None and data["errorMessage"] is None
    return data["progress"]


async def gpt4o_done(client: httpx.AsyncClient, data: dict, task_id: str, body: dict) -> None:
    assert (data["successFlag"], data["status"], data["progress"]) == (1, "SUCCESS", "1.00")
    assert data["response"] == {"resultUrls": [f"http://emulator.test/files/{task_id}/{n}.png" for n in (0, 1)]}
    assert (data["createTime"], data["completeTime"]) == (1_700_000_000_000, 1_700_000_010_000)
    assert isinstance(data["paramJson"], str) and json.loads(data["paramJson"]) == body


GPT4O_TIMELINE = Timeline(
    gpt4o_create,
    lambda client, task_id: kie_record(client, RECORD_INFO, task_id),
    pending_at=(0, 5, 9.9),
    pending=gpt4o_pending,
    shown=["0.00", "0.50", "0.99"],
    done=gpt4o_done,
)


@pytest.mark.parametrize(("fail_code", "error_code"), [("400", 400), ("451", 451), ("500", 500), ("oops", 500)])
async def test_failed_job_in_record_info(emulator, fail_code, error_code):
    _, client = emulator
    await set_faults(client, generate_s=0, fail_rate=1.0, fail_msg="flagged by OpenAI", fail_code=fail_code)
    data = await kie_record(client, RECORD_INFO, await kie_generate(client, GENERATE, body_4o()))
    assert (data["successFlag"], data["status"], data["response"]) == (2, "GENERATE_FAILED", None)
    assert (data["errorCode"], data["errorMessage"]) == (error_code, "flagged by OpenAI")
    assert data["completeTime"] == data["createTime"]


# Bodies 4o generate refuses with a 422, and the field each answer names.
GPT4O_INVALID_BODIES = [
    ({"prompt": "x"}, "size"),
    ({"size": "16:9", "prompt": "x"}, "size"),
    ({"size": "1:1"}, "prompt or filesUrl"),
    ({"size": "1:1", "prompt": "", "filesUrl": []}, "prompt or filesUrl"),
    ({"size": "1:1", "filesUrl": ["https://x/a.png"] * 6}, "filesUrl"),
    ({"size": "1:1", "filesUrl": "https://x/a.png"}, "filesUrl"),
    ({"size": "1:1", "prompt": "x", "nVariants": 3}, "nVariants"),
    ({"size": "1:1", "prompt": "x", "nVariants": True}, "nVariants"),
    ({"size": "1:1", "prompt": "x", "callBackUrl": "ftp://x"}, "callBackUrl"),
    ({"size": "1:1", "prompt": "x", "fallbackModel": "DALL_E"}, "fallbackModel"),
    ({"size": "1:1", "prompt": "x", "isEnhance": "yes"}, "isEnhance"),
    (["size"], "JSON object"),
]


async def test_files_alone_are_enough(emulator):
    _, client = emulator
    task_id = await kie_generate(
        client, GENERATE, {"size": "2:3", "filesUrl": ["https://x/a.png"], "maskUrl": "https://x/m.png"}
    )
    assert task_id.startswith("4o_")


async def test_record_info_errors_and_auth(emulator):
    _, client = emulator
    assert (await client.get(RECORD_INFO, headers=AUTH)).json() == {"code": 400, "msg": "taskId is required"}
    unknown = await client.get(RECORD_INFO, params={"taskId": "4o_x"}, headers=AUTH)
    assert unknown.json() == {"code": 404, "msg": "task not found"}
    market_id = await create(client, create_body())  # a market task is not a 4o task
    assert (await client.get(RECORD_INFO, params={"taskId": market_id}, headers=AUTH)).json()["code"] == 404
    denied = {"code": 401, "msg": "You do not have access permissions"}
    assert (await client.post(GENERATE, json=body_4o())).json() == denied
    assert (await client.get(RECORD_INFO, params={"taskId": market_id})).json() == denied


async def test_signed_success_callback_nests_result_urls_under_info(emulator, receiver):
    store, client = emulator
    await set_faults(client, generate_s=0.2)
    task_id = await kie_generate(client, GENERATE, body_4o(receiver.url, nVariants=4))
    assert await wait_until(lambda: store.jobs[task_id].deliveries)
    urls = [f"http://emulator.test/files/{task_id}/{n}.png" for n in range(4)]
    assert receiver.received[0]["body"] == {
        "code": 200,
        "msg": "success",
        "data": {"taskId": task_id, "info": {"result_urls": urls}},
    }
    assert_signed(receiver.received[0], task_id)
    [task] = (await client.get("/emulator/tasks")).json()
    assert task["api"] == "4o" and task["callBackUrl"] == receiver.url
    assert task["input"] == body_4o(nVariants=4) and task["deliveries"][0]["status"] == 200


async def test_failure_callback_has_null_info(emulator, receiver):
    _, client = emulator
    faults = {"fail_msg": "could not download filesUrl", "fail_code": "451"}
    task_id, body = await failed_callback(client, receiver, GENERATE, body_4o(receiver.url), **faults)
    assert body == {
        "code": 451,
        "msg": "could not download filesUrl",
        "data": {"taskId": task_id, "info": None},
    }


@pytest.mark.parametrize(("size", "ratio"), [("1:1", 1.0), ("3:2", 1.5), ("2:3", 2 / 3)])
async def test_result_images_follow_n_variants_and_size(emulator, size, ratio):
    _, client = emulator
    await set_faults(client, generate_s=0)
    task_id = await kie_generate(client, GENERATE, body_4o(size=size, nVariants=4))
    urls = (await kie_record(client, RECORD_INFO, task_id))["response"]["resultUrls"]
    assert len(urls) == 4
    for url in urls:
        image = await fetch_image(client, url, "image/png")
        assert image.format == "PNG" and image.width / image.height == pytest.approx(ratio, rel=0.01)
    assert (await client.get(f"/files/{task_id}/4.png")).status_code == 404
