"""End to end for every API style: Kie market, 4o Image, Flux Kontext (callbacks) and kvid.ai (polled)."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import pytest
from PIL import Image

from app.db.tables import Task
from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts, count_rows, load_task
from tests.support.gateways import Emulator, wait_for_state

IMAGE = "https://images.example.com/input.png"
STYLES = [
    pytest.param({"model": "bytedance/seedream-v4-text-to-image", "numImages": 2}, 2, id="market"),
    pytest.param({"model": "gpt4o-image", "numImages": 2, "aspectRatio": "3:2"}, 2, id="4o"),
    pytest.param({"model": "flux-kontext-pro", "imageInput": [IMAGE]}, 1, id="flux-kontext"),
    pytest.param({"model": "kvid/text-to-image", "numImages": 2}, 2, id="kvid"),
]


@pytest.mark.parametrize(("body", "images"), STYLES)
async def test_each_api_style_completes_and_serves_status_locally(
    client: httpx.AsyncClient, kie: Emulator, sessions, body: dict, images: int
) -> None:
    await kie.set_faults(generate_s=0.3)
    task_id = await submit(client, **body)
    status = await wait_for_state(client, task_id, {"success", "fail"})
    assert status["state"] == "success", status
    assert status["model"] == body["model"]
    assert len(status["imageUrls"]) == images and status["imageUrl"] == status["imageUrls"][0]
    for url in status["imageUrls"]:
        assert (await client.get(url)).headers["content-type"].startswith("image/")
    verdicts = await callback_verdicts(sessions, task_id)
    assert verdicts == ([] if body["model"].startswith("kvid/") else ["applied"])


@pytest.mark.parametrize(("body", "images"), STYLES)
async def test_each_api_style_reports_upstream_failure(
    client: httpx.AsyncClient, kie: Emulator, body: dict, images: int
) -> None:
    await kie.set_faults(generate_s=0.2, fail_rate=1.0, fail_msg="Flagged by the safety system")
    task_id = await submit(client, **body)
    status = await wait_for_state(client, task_id, {"success", "fail"})
    assert status["state"] == "fail"
    assert status["failMsg"] == "Flagged by the safety system"
    assert status["imageUrls"] == []


@pytest.mark.parametrize(
    ("body", "query_counter"),
    [
        ({"model": "gpt4o-image"}, "gpt4oRecordInfo"),
        ({"model": "flux-kontext-max"}, "fluxRecordInfo"),
    ],
)
async def test_lost_callbacks_of_dedicated_apis_are_recovered_from_their_record_info(
    client: httpx.AsyncClient, kie: Emulator, body: dict, query_counter: str
) -> None:
    await kie.set_faults(generate_s=0.2, drop_callbacks=1.0)
    task_id = await submit(client, **body)
    status = await wait_for_state(client, task_id, {"success", "fail"})
    assert status["state"] == "success" and status["imageUrl"]
    assert (await kie.calls())[query_counter] == 1


async def test_upstream_body_follows_each_api_wire_format(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=60)
    await submit(client, model="gpt4o-image", imageInput=[IMAGE], aspectRatio="2:3", options={"isEnhance": True})
    await submit(client, model="flux-kontext-max", imageInput=[IMAGE], options={"safetyTolerance": 2})
    await submit(client, model="google/imagen4", seed=7, negativePrompt="blur")
    by_api = {task["api"]: task for task in await kie.tasks()}
    assert by_api["4o"]["input"] == {
        "prompt": "a red fox",
        "filesUrl": [IMAGE],
        "size": "2:3",
        "nVariants": 1,
        "isEnhance": True,
    }
    assert by_api["flux-kontext"]["input"] == {
        "prompt": "a red fox",
        "inputImage": IMAGE,
        "outputFormat": "jpeg",
        "safetyTolerance": 2,
        "model": "flux-kontext-max",
    }
    assert by_api["market"]["input"] == {
        "prompt": "a red fox",
        "aspect_ratio": "1:1",
        "negative_prompt": "blur",
        "seed": "7",
    }


async def test_kvid_is_polled_once_per_task_however_many_clients_read(client: httpx.AsyncClient, kie: Emulator) -> None:
    await kie.set_faults(generate_s=1.0)
    task_id = await submit(client, model="kvid/text-to-image")

    async def reader() -> None:
        for _ in range(40):
            await client.get("/api/images/status", params={"taskId": task_id})

    await asyncio.gather(*(reader() for _ in range(5)))
    status = await wait_for_state(client, task_id, {"success", "fail"})
    assert status["state"] == "success"
    calls = await kie.calls()
    # 200 client reads; the sweeper alone polls: every ~0.2-0.3 s for ~1 s, then one result fetch.
    assert 1 <= calls["kvidStatus"] <= 8
    assert calls["kvidResult"] == 1


@pytest.mark.parametrize(("code", "status"), [(402, 402), (422, 422), (400, 400)])
async def test_kvid_refusals_become_clear_client_errors(
    client: httpx.AsyncClient, kie: Emulator, sessions, code: int, status: int
) -> None:
    await kie.set_faults(create_errors=[code])
    response = await client.post("/api/images/generate", json={"prompt": "a fox", "model": "kvid/text-to-image"})
    assert response.status_code == status
    assert response.json()["error"].startswith("kvid.ai error: ")
    async with sessions() as session:
        (task,) = (await session.execute(Task.__table__.select())).all()
    assert task.state == "fail"


async def test_kvid_rate_limit_is_retried_not_failed(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    await kie.set_faults(generate_s=0.2, create_errors=[429])
    task_id = await submit(client, model="kvid/text-to-image")
    assert (await load_task(sessions, task_id)).upstream_id is None
    status = await wait_for_state(client, task_id, {"success", "fail"}, timeout=15)
    assert status["state"] == "success"
    assert (await kie.calls())["kvidGenerate"] == 2


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("encoding", ["multipart", "base64", "data-url"])
async def test_uploaded_image_is_usable_as_input(client: httpx.AsyncClient, kie: Emulator, encoding: str) -> None:
    await kie.set_faults(generate_s=0.2)
    content = png_bytes()
    if encoding == "multipart":
        response = await client.post("/api/uploads", files={"file": ("me.png", content, "image/png")})
    else:
        data = base64.b64encode(content).decode()
        data = data if encoding == "base64" else "data:image/png;base64," + data
        response = await client.post("/api/uploads", json={"data": data})
    assert response.status_code == 200, response.text
    uploaded = response.json()
    assert uploaded["mimeType"] == "image/png" and uploaded["size"] == len(content)
    assert uploaded["expiresAt"]
    assert httpx.get(uploaded["url"]).content == content
    task_id = await submit(client, model="google/nano-banana-edit", imageInput=[uploaded["url"]])
    assert (await wait_for_state(client, task_id, {"success", "fail"}))["state"] == "success"
    (upstream,) = await kie.tasks()
    assert upstream["input"]["image_urls"] == [uploaded["url"]]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        ({"files": {"file": ("x.png", b"GIF89a" + b"0" * 20, "image/png")}}, 400, "file must be a PNG, JPEG or WebP"),
        ({"files": {"other": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")}}, 400, "multipart field 'file' is required"),
        ({"json": {"data": "not base64!"}}, 400, "data is not valid base64"),
        ({"json": {"image": "abc"}}, 400, "JSON uploads need a 'data' field"),
        ({"files": {"file": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * (10 * 1024 * 1024), "image/png")}}, 413, ""),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_sent(
    client: httpx.AsyncClient, kie: Emulator, request_kwargs: dict, status: int, error: str
) -> None:
    response = await client.post("/api/uploads", **request_kwargs)
    assert response.status_code == status
    assert response.json()["error"].startswith(error)
    assert (await kie.calls())["upload"] == 0


async def test_model_catalogue_lists_every_model_with_its_rules(client: httpx.AsyncClient, sessions) -> None:
    catalogue = (await client.get("/api/images/models")).json()
    models = {model["name"]: model for model in catalogue["models"]}
    assert catalogue["default"] == "nano-banana-pro"
    assert len(models) == 26
    pro = models["nano-banana-pro"]
    assert pro["defaults"] == {"aspectRatio": "16:9", "resolution": "2K", "outputFormat": "png"}
    assert pro["imageInput"] == {"min": 0, "max": 8} and pro["prompt"]["maxLength"] == 10000
    assert models["kvid/text-to-image"]["provider"] == "kvid.ai" and not models["kvid/text-to-image"]["callbacks"]
    assert models["gpt4o-image"]["fields"]["numImages"]["values"] == [1, 2, 4]
    assert models["google/imagen4-fast"]["fields"]["numImages"] == {"type": "integer", "min": 1, "max": 4}
    assert models["flux-kontext-pro"]["defaults"] == {"outputFormat": "jpeg"}
    assert await count_rows(sessions, Task) == 0
