"""The emulator's kvid.ai image API: api-key auth, error envelopes, status/result through the timeline, no callbacks."""

import asyncio
import io
from datetime import datetime

import httpx
import pytest
from PIL import Image

from tests.emulator.test_emulator import AUTH, Timeline, set_faults
from tests.support.emulated import API_KEY, KVID_KEY

KVID = {"api-key": KVID_KEY}
TEXT_TO_IMAGE = "/ai/generation/text-to-image/generate-async"
IMAGE_TO_IMAGE = "/ai/generation/image-to-image/generate-async"
STATUS = "/ai/generation/status"
RESULT_KEYS = {
    "job_id", "status", "result_url", "result_urls", "width", "height", "size", "type", "used_credit", "prompt",
    "created_at",
}  # fmt: skip
RESULT = "/ai/generation/result"


def kvid_error(code: str, message: str | None = None) -> dict:
    """The error envelope; `message` None matches any message."""
    return {"success": False, "error": {"code": code, "message": message}}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == kvid_error(code, body["error"]["message"]) and body["error"]["message"]


async def generate(client: httpx.AsyncClient, path: str = TEXT_TO_IMAGE, **fields) -> str:
    response = await client.post(path, json={"prompt": "a red fox", **fields}, headers=KVID)
    assert response.status_code == 200 and response.json()["success"] is True, response.text
    return response.json()["data"]["job_id"]


async def query(client: httpx.AsyncClient, path: str, job_id: str) -> httpx.Response:
    return await client.get(path, params={"jobId": job_id}, headers=KVID)


@pytest.mark.parametrize("headers", [{}, {"api-key": "wrong"}, AUTH, {"Authorization": f"Bearer {KVID_KEY}"}])
async def test_wrong_or_missing_api_key_is_a_401(emulator, headers):
    store, client = emulator
    denied = kvid_error("INVALID_API_KEY", "Invalid API key")
    for response in (
        await client.post(TEXT_TO_IMAGE, json={"prompt": "x"}, headers=headers),
        await client.get(STATUS, params={"jobId": "img_x"}, headers=headers),
        await client.get(RESULT, params={"jobId": "img_x"}, headers=headers),
    ):
        assert response.status_code == 401 and response.json() == denied
    assert store.jobs == {}


async def test_the_kvid_key_does_not_open_kie_endpoints(emulator):
    _, client = emulator
    body = {"model": "google/nano-banana", "input": {"prompt": "x"}}
    assert (await client.post("/api/v1/jobs/createTask", json=body, headers=KVID)).json()["code"] == 401
    assert API_KEY != KVID_KEY


@pytest.mark.parametrize(("path", "image_type"), [(TEXT_TO_IMAGE, "text-to-image"), (IMAGE_TO_IMAGE, "image-to-image")])
async def test_create_answers_a_queued_job(emulator, path, image_type):
    _, client = emulator
    await set_faults(client, generate_s=2.5)
    response = await client.post(path, json={"prompt": "x", "image_url": "https://x/a.png"}, headers=KVID)
    data = response.json()["data"]
    assert response.status_code == 200 and response.json()["success"] is True
    assert data == {
        "job_id": data["job_id"],
        "status": "queued",
        "message": "Job queued",
        "estimated_time": 3,
        "image_type": image_type,
    }
    assert data["job_id"].startswith("img_") and len(data["job_id"]) == 28


async def kvid_create(client) -> tuple[str, dict]:
    return await generate(client), {"prompt": "a red fox"}


async def kvid_status(client, job_id: str) -> dict:
    response = await query(client, STATUS, job_id)
    assert response.status_code == 200 and response.json()["success"] is True
    data = response.json()["data"]
    assert set(data) == {"job_id", "status", "progress"} and data["job_id"] == job_id
    return data


async def kvid_done(client: httpx.AsyncClient, data: dict, job_id: str, body: dict) -> None:
    assert (data["status"], data["progress"]) == ("completed", 100)


KVID_TIMELINE = Timeline(
    kvid_create,
    kvid_status,
    pending_at=(0, 2.5, 5),
    pending=lambda data: (data["status"], data["progress"]),
    shown=[("queued", 0), ("queued", 25), ("processing", 50)],
    done=kvid_done,
)


async def test_result_before_completion_is_a_400(emulator):
    _, client = emulator
    await set_faults(client, generate_s=30)
    assert_error(await query(client, RESULT, await generate(client)), 400, "JOB_NOT_COMPLETED")


async def test_completed_result_describes_the_served_images(emulator):
    store, client = emulator
    await set_faults(client, generate_s=0)
    job_id = await generate(client, aspect_ratio="16:9", output_format="png", num_images=2, seed=7)
    response = await query(client, RESULT, job_id)
    assert response.status_code == 200 and response.json()["success"] is True
    data = response.json()["data"]
    urls = [f"http://emulator.test/files/{job_id}/{n}.png" for n in (0, 1)]
    assert set(data) == RESULT_KEYS
    assert (data["job_id"], data["status"], data["prompt"]) == (job_id, "completed", "a red fox")
    assert (data["result_url"], data["result_urls"]) == (urls[0], urls)
    assert (data["width"], data["height"], data["type"]) == (512, 288, "image/png")
    assert isinstance(data["used_credit"], int | float) and data["used_credit"] > 0
    assert data["created_at"].endswith("Z")
    created_at = datetime.fromisoformat(data["created_at"])
    assert abs(created_at.timestamp() - store.jobs[job_id].created) < 0.001 and created_at.utcoffset().seconds == 0
    for url in urls:
        served = await client.get(url)
        assert served.headers["content-type"] == "image/png" and len(served.content) == data["size"]
        assert Image.open(io.BytesIO(served.content)).size == (512, 288)


@pytest.mark.parametrize(
    ("fields", "size", "media_type"),
    [({}, (512, 512), "image/jpeg"), ({"image_size": {"width": 1024, "height": 768}}, (512, 384), "image/jpeg")],
)
async def test_result_defaults_to_one_square_jpeg(emulator, fields, size, media_type):
    _, client = emulator
    await set_faults(client, generate_s=0)
    data = (await query(client, RESULT, await generate(client, **fields))).json()["data"]
    assert (data["width"], data["height"], data["type"]) == (*size, media_type)
    assert len(data["result_urls"]) == 1 and data["result_url"].endswith("/0.jpg")


async def test_failed_job_status_and_result(emulator):
    _, client = emulator
    await set_faults(client, generate_s=0, fail_rate=1.0, fail_msg="Safety check failed")
    job_id = await generate(client)
    assert (await query(client, STATUS, job_id)).json()["data"]["status"] == "failed"
    result = await query(client, RESULT, job_id)
    assert result.status_code == 200
    assert result.json() == {
        "success": True,
        "data": {"job_id": job_id, "status": "failed", "error": "Safety check failed"},
    }


async def test_unknown_or_missing_job_id(emulator):
    _, client = emulator
    for path in (STATUS, RESULT):
        assert_error(await query(client, path, "img_unknown"), 404, "JOB_NOT_FOUND")
        assert_error(await client.get(path, headers=KVID), 400, "MISSING_PARAMETERS")
    kie_id = (
        await client.post("/api/v1/gpt4o-image/generate", json={"size": "1:1", "prompt": "x"}, headers=AUTH)
    ).json()["data"]["taskId"]
    assert_error(await query(client, STATUS, kie_id), 404, "JOB_NOT_FOUND")  # kvid does not see Kie's jobs


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (TEXT_TO_IMAGE, {}, "INVALID_PROMPT"),
        (TEXT_TO_IMAGE, {"prompt": ""}, "INVALID_PROMPT"),
        (TEXT_TO_IMAGE, {"prompt": 3}, "INVALID_PROMPT"),
        (IMAGE_TO_IMAGE, {"prompt": "x"}, "MISSING_PARAMETERS"),
        (IMAGE_TO_IMAGE, {"prompt": "x", "image_urls": []}, "MISSING_PARAMETERS"),
        (TEXT_TO_IMAGE, {"prompt": "x", "output_format": "webp"}, "INVALID_PARAMETERS"),
        (TEXT_TO_IMAGE, {"prompt": "x", "num_images": 5}, "INVALID_PARAMETERS"),
        (TEXT_TO_IMAGE, {"prompt": "x", "image_size": {"width": 2048, "height": 512}}, "INVALID_PARAMETERS"),
        (TEXT_TO_IMAGE, ["prompt"], "INVALID_PARAMETERS"),
    ],
)
async def test_invalid_bodies_are_400s_with_a_named_error(emulator, path, body, code):
    store, client = emulator
    assert_error(await client.post(path, json=body, headers=KVID), 400, code)
    assert store.jobs == {}


async def test_invalid_json_is_a_400(emulator):
    _, client = emulator
    assert_error(await client.post(TEXT_TO_IMAGE, content=b"{", headers=KVID), 400, "INVALID_PARAMETERS")


async def test_image_to_image_accepts_a_url_list(emulator):
    store, client = emulator
    job_id = await generate(client, IMAGE_TO_IMAGE, image_urls=["https://x/a.png", "https://x/b.png"])
    assert store.jobs[job_id].summary(0)["model"] == "image-to-image"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_PROMPT"),
        (402, "INSUFFICIENT_CREDITS"),
        (422, "SAFETY_CHECK_FAILED"),
        (429, "RATE_LIMITED"),
        (500, "SERVER_ERROR"),
        (503, "SERVER_ERROR"),
        (418, "INVALID_PARAMETERS"),
    ],
)
async def test_queued_create_errors_use_the_http_status_and_envelope(emulator, status, code):
    store, client = emulator
    await set_faults(client, create_errors=[status])
    assert_error(await client.post(TEXT_TO_IMAGE, json={"prompt": "x"}, headers=KVID), status, code)
    assert store.jobs == {}
    await generate(client)  # the queue entry was consumed
    assert (await client.get("/emulator/calls")).json()["kvidGenerate"] == 2


async def test_queued_http_errors_are_bare(emulator):
    _, client = emulator
    await set_faults(client, create_http_errors=[502])
    response = await client.post(IMAGE_TO_IMAGE, json={"prompt": "x", "image_url": "https://x/a"}, headers=KVID)
    assert response.status_code == 502 and response.text == "502 Bad Gateway"


async def test_kvid_never_calls_back(emulator, receiver):
    store, client = emulator
    await set_faults(client, generate_s=0.05, duplicate_callbacks=2)
    job_id = await generate(client, callBackUrl=receiver.url)  # kvid has no webhooks, whatever the body says
    await asyncio.sleep(0.3)
    assert receiver.received == []
    [task] = (await client.get("/emulator/tasks")).json()
    assert (task["api"], task["callBackUrl"], task["deliveries"], task["dropped"]) == ("kvid", None, [], False)
    assert task["input"] == {"prompt": "a red fox"} and task["state"] == "success"
    redelivered = await client.post(f"/emulator/tasks/{job_id}/callback")
    assert redelivered.status_code == 409 and "no callbacks" in redelivered.json()["error"]
    assert store.jobs[job_id].deliveries == []
