"""The emulator's Kie Flux Kontext API: generate, record-info through the timeline, callbacks, result image."""

import json

import httpx
import pytest

from tests.emulator.test_emulator import (
    AUTH,
    Timeline,
    assert_signed,
    create_dedicated,
    failed_callback,
    fetch_image,
    set_faults,
)
from tests.support.kie_calls import kie_generate, kie_record
from tests.support.waiting import wait_until

GENERATE = "/api/v1/flux/kontext/generate"
RECORD_INFO = "/api/v1/flux/kontext/record-info"
RECORD_KEYS = {
    "taskId", "paramJson", "completeTime", "createTime", "successFlag", "errorCode", "errorMessage", "response",
}  # fmt: skip


def body_flux(callback_url: str | None = None, **fields) -> dict:
    body = {"prompt": "a red fox in the snow", **fields}
    if callback_url:
        body["callBackUrl"] = callback_url
    return body


async def flux_create(client) -> tuple[str, dict]:
    body = body_flux(model="flux-kontext-max", promptUpsampling=True)
    return await create_dedicated(client, GENERATE, body, "fk_"), body


def flux_pending(data: dict) -> None:
    assert set(data) == RECORD_KEYS
    assert (data["successFlag"], data["response"], data["completeTime"], data["errorCode"]) == (0, None, None, None)


async def flux_done(client: httpx.AsyncClient, data: dict, task_id: str, body: dict) -> None:
    url = f"http://emulator.test/files/{task_id}/0.jpg"  # jpeg is Flux's default format
    assert data["successFlag"] == 1 and data["response"] == {"originImageUrl": url, "resultImageUrl": url}
    assert (data["createTime"], data["completeTime"]) == (1_700_000_000_000, 1_700_000_010_000)
    assert (data["errorCode"], data["errorMessage"]) == (None, None)
    assert json.loads(data["paramJson"]) == body
    [task] = (await client.get("/emulator/tasks")).json()
    assert (task["api"], task["model"], task["input"]) == ("flux-kontext", "flux-kontext-max", body)


FLUX_TIMELINE = Timeline(
    flux_create,
    lambda client, task_id: kie_record(client, RECORD_INFO, task_id),
    pending_at=(0, 5, 9.9),
    pending=flux_pending,
    shown=[None, None, None],
    done=flux_done,
)


async def test_failed_job_in_record_info(emulator):
    _, client = emulator
    await set_faults(client, generate_s=0, fail_rate=1.0, fail_msg="generation failed")
    data = await kie_record(client, RECORD_INFO, await kie_generate(client, GENERATE, body_flux()))
    assert (data["successFlag"], data["errorCode"], data["errorMessage"]) == (3, 501, "generation failed")
    assert data["response"] is None and data["completeTime"] == data["createTime"]


# Bodies Flux Kontext generate refuses with a 422, and the field each answer names.
FLUX_INVALID_BODIES = [
    ({}, "prompt"),
    ({"prompt": " "}, "prompt"),
    (body_flux(aspectRatio="5:4"), "aspectRatio"),
    (body_flux(outputFormat="webp"), "outputFormat"),
    (body_flux(model="flux-kontext-ultra"), "model"),
    (body_flux(inputImage="not a url"), "inputImage"),
    (body_flux(inputImage="https://x/a.png", safetyTolerance=5), "safetyTolerance"),
    (body_flux(safetyTolerance=7), "safetyTolerance"),
    (body_flux(callBackUrl="ftp://x"), "callBackUrl"),
    (body_flux(enableTranslation="no"), "enableTranslation"),
]


async def test_record_info_errors_and_auth(emulator):
    _, client = emulator
    assert (await client.get(RECORD_INFO, headers=AUTH)).json() == {"code": 400, "msg": "taskId is required"}
    unknown = await client.get(RECORD_INFO, params={"taskId": "fk_x"}, headers=AUTH)
    assert unknown.json() == {"code": 404, "msg": "task not found"}
    denied = {"code": 401, "msg": "You do not have access permissions"}
    assert (await client.post(GENERATE, json=body_flux(), headers={"Authorization": "Bearer no"})).json() == denied


async def test_signed_success_callback(emulator, receiver):
    store, client = emulator
    await set_faults(client, generate_s=0.2)
    task_id = await kie_generate(client, GENERATE, body_flux(receiver.url, outputFormat="png"))
    assert await wait_until(lambda: store.jobs[task_id].deliveries)
    url = f"http://emulator.test/files/{task_id}/0.png"
    assert receiver.received[0]["body"] == {
        "code": 200,
        "msg": "BFL image generated successfully.",
        "data": {"taskId": task_id, "info": {"originImageUrl": url, "resultImageUrl": url}},
    }
    assert_signed(receiver.received[0], task_id)


async def test_failure_callback_has_empty_urls(emulator, receiver):
    _, client = emulator
    faults = {"fail_msg": "content policy", "fail_code": "400"}
    task_id, body = await failed_callback(client, receiver, GENERATE, body_flux(receiver.url), **faults)
    assert body == {
        "code": 501,
        "msg": "content policy",
        "data": {"taskId": task_id, "info": {"originImageUrl": "", "resultImageUrl": ""}},
    }


@pytest.mark.parametrize(
    ("fields", "media_type", "ratio"),
    [
        ({}, "image/jpeg", 16 / 9),
        ({"aspectRatio": "9:16", "outputFormat": "png"}, "image/png", 9 / 16),
        ({"aspectRatio": "21:9", "outputFormat": "jpeg"}, "image/jpeg", 21 / 9),
        ({"inputImage": "https://x/a.png", "aspectRatio": "3:4"}, "image/jpeg", 3 / 4),
    ],
)
async def test_result_image_follows_aspect_ratio_and_format(emulator, fields, media_type, ratio):
    _, client = emulator
    await set_faults(client, generate_s=0)
    task_id = await kie_generate(client, GENERATE, body_flux(**fields))
    url = (await kie_record(client, RECORD_INFO, task_id))["response"]["resultImageUrl"]
    image = await fetch_image(client, url, media_type)
    assert image.width / image.height == pytest.approx(ratio, rel=0.01)
    assert (await client.get(url.replace("/0.", "/1."))).status_code == 404
