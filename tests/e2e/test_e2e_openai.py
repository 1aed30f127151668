"""End to end, with the official `openai` SDK as the client: the OpenAI-compatible Images API of a live gateway over
the Kie emulator. Every request makes an ordinary task (one upstream create, status, tenancy, idempotency), the
answer comes once the task is done, and errors are the SDK's own classes, with OpenAI's param and code."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.db.tables import ApiKey
from tests.support.database import MakeClientKey, MakeKey
from tests.support.gateways import EMULATOR_API_KEY, Emulator, Gateway, StartGateway, wait_for_state
from tests.support.waiting import wait_until


def png(size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


FOX, OWL = png(colour=(200, 80, 0)), png(colour=(90, 90, 90))


def sdk(gateway: Gateway, key: str, *, retries: int = 0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=retries)


@pytest.fixture
async def key(make_key: MakeKey) -> str:
    return await make_key("openai-client")


@pytest.fixture
async def oai(gateway: Gateway, key: str) -> AsyncIterator[AsyncOpenAI]:
    async with sdk(gateway, key) as client:
        yield client


@pytest.fixture
async def native(gateway: Gateway, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The same client's key on imagehook's own API."""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
        yield http


async def only_job(kie: Emulator) -> dict[str, Any]:
    (job,) = await kie.tasks()
    return job


async def fetched(url: str) -> bytes:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.content


def decoded_png(b64: str | None) -> Image.Image:
    assert b64 is not None
    content = base64.b64decode(b64, validate=True)
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


async def test_generate_answers_with_the_finished_tasks_url(
    oai: AsyncOpenAI, native: httpx.AsyncClient, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.3)
    raw = await oai.images.with_raw_response.generate(
        model="dall-e-3", prompt="A lighthouse at dawn", size="1792x1024", response_format="url"
    )
    result, task_id = raw.parse(), raw.headers["x-imagehook-task-id"]
    (image,) = result.data
    assert image.url is not None and image.b64_json is None
    content = await fetched(image.url)
    assert Image.open(io.BytesIO(content)).format == "PNG"
    # An ordinary task: one upstream create for imagehook's equivalent of dall-e-3, and a status like any other.
    job = await only_job(kie)
    assert job["model"] == "nano-banana-pro"
    assert (job["input"]["aspect_ratio"], job["input"]["resolution"]) == ("16:9", "2K")
    status = (await native.get("/api/images/status", params={"taskId": task_id})).json()
    assert status["state"] == "success" and len(status["imageUrls"]) == 1
    # The same image, whether the status still names the provider's file or already imagehook's copy.
    assert (await native.get(status["imageUrl"])).content == content
    assert result.created == int(datetime.fromisoformat(status["createdAt"]).timestamp())


async def test_b64_json_is_the_result_image_itself(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    # gpt-image-1 answers with base64 unless asked otherwise, as OpenAI's does; n=2 is one task of two images.
    result = await oai.images.generate(model="gpt-image-1", prompt="Two owls", n=2, size="1536x1024")
    assert len(result.data) == 2
    job = await only_job(kie)
    assert (job["api"], job["input"]["size"], job["input"]["nVariants"]) == ("4o", "3:2", 2)
    record = await kie.http.get(
        "/api/v1/gpt4o-image/record-info",
        params={"taskId": job["taskId"]},
        headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"},
    )
    status = record.json()
    for image, url in zip(result.data, status["data"]["response"]["resultUrls"], strict=True):
        assert image.url is None
        picture = decoded_png(image.b64_json)
        assert picture.width / picture.height == pytest.approx(1.5, rel=0.01)
        assert base64.b64decode(image.b64_json or "") == await fetched(url)


async def test_b64_json_is_read_from_imagehooks_own_copy_once_stored(
    oai: AsyncOpenAI, native: httpx.AsyncClient, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.2)
    headers = {"Idempotency-Key": "copy-me"}
    first = await oai.images.with_raw_response.generate(
        prompt="A harbour", response_format="b64_json", extra_headers=headers
    )
    task_id = first.headers["x-imagehook-task-id"]

    async def copied() -> bool:
        status = (await native.get("/api/images/status", params={"taskId": task_id})).json()
        return status["imageUrl"].endswith(f"/api/images/{task_id}/files/0")

    await wait_until(copied, timeout=10)
    await kie.http.post("/emulator/reset")  # the provider's files are gone: only imagehook's copy is left
    again = await oai.images.generate(prompt="A harbour", response_format="b64_json", extra_headers=headers)
    assert again.data[0].b64_json == first.parse().data[0].b64_json
    decoded_png(again.data[0].b64_json)
    assert (await kie.calls())["createTask"] == 0  # the same task, not a new one


async def test_edit_with_one_image_hands_it_to_the_provider(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    result = await oai.images.edit(
        model="gpt-image-1", image=("fox.png", FOX, "image/png"), prompt="Give the fox a hat", response_format="url"
    )
    assert len(result.data) == 1 and result.data[0].url
    job = await only_job(kie)
    (input_url,) = job["input"]["filesUrl"]
    assert await fetched(input_url) == FOX
    assert (await kie.calls())["upload"] == 1


async def test_edit_with_two_images_sends_both_in_order(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    # A list is sent as `image[]` parts, as the SDK does for several files.
    result = await oai.images.edit(
        model="dall-e-3",
        image=[("fox.png", FOX, "image/png"), ("owl.png", OWL, "image/png")],
        prompt="The fox and the owl together",
        size="1024x1024",
    )
    assert len(result.data) == 1
    job = await only_job(kie)
    assert job["model"] == "nano-banana-pro" and job["input"]["aspect_ratio"] == "1:1"
    assert [await fetched(url) for url in job["input"]["image_input"]] == [FOX, OWL]


async def test_a_mask_reaches_the_provider_black_where_it_was_transparent(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    mask = Image.new("RGBA", (64, 48), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 48))  # the left half is to be edited
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    await oai.images.edit(
        model="gpt-image-1",
        image=("fox.png", FOX, "image/png"),
        mask=("mask.png", buffer.getvalue(), "image/png"),
        prompt="Replace the left half with snow",
    )
    job = await only_job(kie)
    sent = Image.open(io.BytesIO(await fetched(job["input"]["maskUrl"]))).convert("L")
    assert sent.size == (64, 48)
    assert (sent.getpixel((5, 20)), sent.getpixel((60, 20))) == (0, 255)


@pytest.mark.parametrize(
    ("call", "param"),
    [
        ({"model": "gpt-image-1", "size": "1792x1024"}, "size"),  # no 16:9 in GPT Image 1
        ({"size": "huge"}, "size"),
        ({"model": "nano-banana-pro", "size": "8192x8192"}, "size"),
        ({"model": "google/imagen4", "n": 2}, "n"),
        ({"model": "gpt-image-1", "n": 3}, "n"),
        ({"model": "dall-e-3", "quality": "hd"}, "quality"),
        ({"model": "no-such-model"}, "model"),
        ({"model": "nano-banana-pro", "output_format": "webp"}, "output_format"),
        ({"extra_body": {"style": "vivid"}}, "style"),
        ({"prompt": "x" * 10001}, "prompt"),
    ],
)
async def test_bad_generations_are_bad_requests_naming_the_param_and_send_nothing(
    oai: AsyncOpenAI, kie: Emulator, call: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.images.generate(**({"prompt": "a cat"} | call))
    assert caught.value.param == param
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert (await kie.calls())["createTask"] == 0


async def test_a_bad_edit_uploads_nothing(oai: AsyncOpenAI, kie: Emulator) -> None:
    mask = ("mask.png", png(mode="RGBA", colour=(0, 0, 0, 0)), "image/png")
    cases = [
        ({"model": "dall-e-3", "mask": mask}, "mask"),  # nano-banana-pro takes no mask
        ({"model": "gpt-image-1", "image": [("a.png", FOX, "image/png")] * 6}, "image"),  # at most 5
        (
            {"model": "gpt-image-1", "image": [("a.png", FOX, "image/png"), ("b.png", b"not an image", "image/png")]},
            "image",
        ),
        ({"model": "gpt-image-1", "mask": ("mask.png", FOX, "image/png")}, "mask"),  # no alpha channel
        ({"model": "google/imagen4"}, "model"),  # makes images, cannot edit
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await oai.images.edit(**({"image": ("fox.png", FOX, "image/png"), "prompt": "edit it"} | call))
        assert caught.value.param == param, call
    assert (await kie.calls())["upload"] == 0 and (await kie.calls())["createTask"] == 0


def part(name: str, value: bytes | str, filename: str | None = None) -> tuple[str, Any]:
    return (name, (filename, value, "image/png" if filename else "text/plain"))


@pytest.mark.parametrize(
    ("request_kwargs", "param", "message"),
    [
        ({"json": {"prompt": "x"}}, None, "Send the edit as multipart/form-data"),
        ({"files": [part("image", FOX), part("prompt", "x")]}, "image", "image must be a file"),
        ({"files": [part("image[]", FOX, "a.png"), part("prompt", FOX, "p.png")]}, "prompt", "prompt must be a text"),
        ({"files": [part("image", FOX, "a.png"), part("prompt", "x"), part("prompt", "y")]}, "prompt", "prompt must"),
        ({"files": [part("image", FOX, "a.png"), part("prompt", "x"), part("n", "two")]}, "n", "n must be an integer"),
        ({"files": [part("image", FOX, "a.png"), part("prompt", "a\x00b")]}, "prompt", "Request body: prompt contains"),
        ({"files": [part("image", b"GIF89a....", "a.gif"), part("prompt", "x")]}, "image", "image: file must be"),
        ({"files": [part("prompt", "x")]}, "image", "image is required"),
        ({"content": b"--x\r\n\r\n--x--\r\n", "headers": {"Content-Type": "multipart/form-data"}}, None, "Malformed"),
    ],
)
async def test_malformed_edit_requests_are_400s_in_openais_shape(
    gateway: Gateway, key: str, kie: Emulator, request_kwargs: dict[str, Any], param: str | None, message: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
        response = await http.post("/v1/images/edits", **request_kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param) and error["message"].startswith(message)
    assert (await kie.calls())["upload"] == 0


async def test_an_upstream_failure_is_a_server_error_that_the_sdk_does_not_retry(
    gateway: Gateway, key: str, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.2, fail_rate=1.0, fail_msg="Generation failed upstream")
    async with sdk(gateway, key, retries=2) as client:  # the SDK's own retries, on
        with pytest.raises(openai.InternalServerError) as caught:
            await client.images.generate(prompt="A storm")
    assert caught.value.status_code == 500
    assert caught.value.code == "generation_failed" and "Generation failed upstream" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert (await kie.calls())["createTask"] == 1  # a retry would have made, and charged, a second task


async def test_a_definite_refusal_at_create_is_a_bad_request(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(create_errors=[422])
    with pytest.raises(openai.BadRequestError, match="Kie.ai error: Validation error"):
        await oai.images.generate(prompt="A storm")


async def test_a_task_not_done_in_time_is_a_timeout_naming_it(
    start_gateway: StartGateway, key: str, kie: Emulator, native: httpx.AsyncClient
) -> None:
    await kie.set_faults(generate_s=3)
    gateway = await start_gateway(openai_wait_s=0.5)
    async with sdk(gateway, key, retries=2) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.images.generate(prompt="A slow one")
    response = caught.value.response
    task_id = response.headers["x-imagehook-task-id"]
    assert response.status_code == 504 and caught.value.code == "timeout" and task_id in caught.value.message
    assert (await kie.calls())["createTask"] == 1
    async with httpx.AsyncClient(base_url=gateway.url, headers=native.headers) as http:
        assert (await wait_for_state(http, task_id, {"success"}))["state"] == "success"  # it went on


async def test_the_keys_limits_apply_as_openais_rate_limit_answers(
    gateway: Gateway, make_client_key: MakeClientKey, sessions: async_sessionmaker[Any], kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.2)
    budgeted, rated = await make_client_key("budgeted"), await make_client_key("rated")
    async with sessions.begin() as session:  # a budget below one image's reservation; one submission a minute
        await session.execute(update(ApiKey).where(ApiKey.id == budgeted.id).values(daily_credit_budget=1))
        await session.execute(update(ApiKey).where(ApiKey.id == rated.id).values(rate_per_minute=1))
    async with sdk(gateway, budgeted.key, retries=2) as client:
        with pytest.raises(openai.RateLimitError) as spent:
            await client.images.generate(prompt="a cat")
    assert (spent.value.code, spent.value.type) == ("insufficient_quota", "insufficient_quota")
    async with sdk(gateway, rated.key) as client:
        await client.images.generate(prompt="a cat")
        with pytest.raises(openai.RateLimitError) as limited:
            await client.images.generate(prompt="a cat")
        with pytest.raises(openai.RateLimitError):  # refused before its file is sent anywhere
            await client.images.edit(image=("fox.png", FOX, "image/png"), prompt="a hat")
    assert limited.value.code == "rate_limit_exceeded" and "retry-after" in limited.value.response.headers
    assert (await kie.calls())["createTask"] == 1 and (await kie.calls())["upload"] == 0


async def test_a_missing_or_wrong_key_is_an_authentication_error(gateway: Gateway, kie: Emulator) -> None:
    async with sdk(gateway, "ih_not-a-key") as client:
        with pytest.raises(openai.AuthenticationError) as wrong:
            await client.images.generate(prompt="a cat")
        with pytest.raises(openai.AuthenticationError) as missing:  # no Authorization header at all
            await client.images.generate(prompt="a cat", extra_headers={"Authorization": openai.omit})
    for caught in (wrong, missing):
        assert caught.value.body == {
            "message": "Missing or invalid API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    assert missing.value.response.request.headers.get("authorization") is None
    assert (await kie.calls())["createTask"] == 0


async def test_another_tenant_cannot_see_the_task(
    gateway: Gateway, oai: AsyncOpenAI, make_key: MakeKey, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.2)
    raw = await oai.images.with_raw_response.generate(prompt="Mine", extra_headers={"Idempotency-Key": "shared"})
    task_id = raw.headers["x-imagehook-task-id"]
    other_key = await make_key("other")
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {other_key}"}) as other:
        assert (await other.get("/api/images/status", params={"taskId": task_id})).status_code == 404
        assert (await other.get(f"/api/images/{task_id}/files/0")).status_code == 404
    async with sdk(gateway, other_key) as theirs:  # the same Idempotency-Key is theirs alone
        again = await theirs.images.with_raw_response.generate(
            prompt="Mine", extra_headers={"Idempotency-Key": "shared"}
        )
    assert again.headers["x-imagehook-task-id"] != task_id
    assert (await kie.calls())["createTask"] == 2


async def test_the_same_idempotency_key_answers_from_the_same_task(oai: AsyncOpenAI, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    headers = {"Idempotency-Key": "edit-1"}
    first = await oai.images.edit(image=("fox.png", FOX, "image/png"), prompt="a hat", extra_headers=headers)
    again = await oai.images.edit(image=("fox.png", FOX, "image/png"), prompt="a hat", extra_headers=headers)
    assert first.data == again.data
    assert (await kie.calls())["createTask"] == 1
    assert (await kie.calls())["upload"] == 1  # the retry found its task before uploading anything
    with pytest.raises(openai.ConflictError):
        await oai.images.edit(image=("owl.png", OWL, "image/png"), prompt="a hat", extra_headers=headers)


async def test_errors_off_the_routes_take_openais_shape_on_v1_only(gateway: Gateway, key: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
        wrong_method = await http.get("/v1/images/generations")
        unknown = await http.post("/v1/images/variations", json={})
        native = await http.post("/api/images/generate", json={"prompt": " "})
        nul = await http.post("/v1/images/generations?q=%00", json={"prompt": "x"})
    assert nul.status_code == 400 and nul.json()["error"]["message"] == "Request query string contains a NUL character"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "Not Found"
    assert native.json() == {"error": "Prompt is required"}
