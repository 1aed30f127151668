"""KvidClient against a mocked kvid.ai (httpx.MockTransport).

Wire shapes follow kie-api-facts §8: `api-key` header, generate-async per kind, status then result polling,
and the {"success": false, "error": {"code", "message"}} envelope with a real HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.errors import ProviderRejected, ProviderUnavailable
from app.providers.catalogue import KVID, MODELS
from app.providers.kvid.client import KvidClient
from app.tasks.domain import State, Update
from app.tasks.validation import parse_generate
from tests.support.mock_http import Handler, answer, raising

BASE = "https://kvid.test"
API_KEY = "kvid-secret-key"
IMG = "https://cdn.kvid.ai/r/1.jpeg"
IMG2 = "https://cdn.kvid.ai/r/2.jpeg"
SOURCE = "https://cdn.example.com/source.png"


@asynccontextmanager
async def kvid_answering(handler: Handler) -> AsyncIterator[KvidClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield KvidClient(http, BASE, API_KEY)


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def failure(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}


async def create(handler: Handler, model: str = "kvid/text-to-image") -> str:
    submission = parse_generate({"prompt": "a cat", "model": model})
    async with kvid_answering(handler) as kvid:
        return await kvid.create(submission.model, submission.payload, None)


def polled(status: dict[str, Any], result: dict[str, Any] | None = None) -> tuple[Handler, list[httpx.Request]]:
    """A kvid answering `status` on /status and `result` on /result, recording the requests."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/ai/generation/status":
            return httpx.Response(200, json=ok({"job_id": "img_1", **status}))
        if request.url.path == "/ai/generation/result" and result is not None:
            return httpx.Response(200, json=ok({"job_id": "img_1", **result}))
        return httpx.Response(404, json=failure("JOB_NOT_FOUND", "no such job"))

    return handler, seen


async def query(handler: Handler) -> Update:
    async with kvid_answering(handler) as kvid:
        return await kvid.query(KVID, "img_1")


# --- create -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "path", "sent"),
    [
        (
            {"prompt": "a cat", "model": "kvid/text-to-image", "numImages": 2, "options": {"guidance_scale": 7.5}},
            "/ai/generation/text-to-image/generate-async",
            {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "jpeg", "num_images": 2, "guidance_scale": 7.5},
        ),
        (
            {"prompt": "a cat", "model": "kvid/image-to-image", "imageInput": [SOURCE]},
            "/ai/generation/image-to-image/generate-async",
            {"prompt": "a cat", "image_url": SOURCE, "aspect_ratio": "1:1", "output_format": "jpeg"},
        ),
    ],
    ids=["text-to-image", "image-to-image"],
)
async def test_create_posts_the_flat_body_with_the_api_key_to_the_models_endpoint(request_body, path, sent):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ok({"job_id": "img_abc", "status": "queued", "estimated_time": 20}))

    submission = parse_generate(request_body)
    async with kvid_answering(handler) as kvid:
        assert await kvid.create(submission.model, submission.payload, None) == "img_abc"

    [request] = seen
    assert (request.method, str(request.url)) == ("POST", BASE + path)
    assert request.headers["api-key"] == API_KEY
    assert "Authorization" not in request.headers
    assert json.loads(request.content) == sent


@pytest.mark.parametrize(
    "data",
    [{}, {"job_id": ""}, {"job_id": 123}, {"status": "queued"}],
    ids=["empty", "blank", "number", "no-id"],
)
async def test_accepted_job_without_a_job_id_is_unavailable(data):
    with pytest.raises(ProviderUnavailable):
        await create(answer(body=ok(data)))


@pytest.mark.parametrize("body", [ok(None), ok("img_abc"), {"success": True}], ids=["null", "string", "missing"])
async def test_success_without_a_data_object_is_unavailable(body):
    with pytest.raises(ProviderUnavailable):
        await create(answer(body=body))


@pytest.mark.parametrize(
    ("status", "code", "message", "client_status"),
    [
        (400, "INVALID_PROMPT", "Prompt is empty or invalid", 400),
        (402, "INSUFFICIENT_CREDITS", "Not enough credits", 402),
        (422, "SAFETY_CHECK_FAILED", "The prompt did not pass the safety check", 422),
        (403, "INVALID_API_KEY", "Invalid API key", 400),
    ],
)
async def test_error_envelope_is_a_rejection_with_kvids_message_and_a_client_status(
    status, code, message, client_status
):
    with pytest.raises(ProviderRejected) as raised:
        await create(answer(status, failure(code, message)))

    assert (raised.value.code, raised.value.message) == (status, message)
    async with kvid_answering(answer()) as kvid:
        assert kvid.rejection_status(raised.value.code) == client_status


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"success": False, "error": {"code": "INVALID_PARAMETERS"}}, "INVALID_PARAMETERS"),
        ({"message": "bad things"}, "bad things"),
        (None, "HTTP 400"),
    ],
    ids=["code-only", "flat-message", "no-body"],
)
async def test_rejection_message_falls_back_to_the_error_code_then_the_http_status(body, message):
    with pytest.raises(ProviderRejected) as raised:
        await create(answer(400, body))

    assert raised.value.message == message


@pytest.mark.parametrize("code", [None, 404, 500])
async def test_other_refusals_reach_the_client_as_400(code):
    async with kvid_answering(answer()) as kvid:
        assert kvid.rejection_status(code) == 400


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(429, {"Retry-After": "12"}, 12.0), (429, {}, None), (408, {}, None), (500, {}, None), (503, {}, None)],
)
async def test_rate_limits_and_server_errors_are_unavailable_with_the_retry_hint(status, headers, retry_after):
    with pytest.raises(ProviderUnavailable) as raised:
        await create(
            answer(status, failure("RATE_LIMITED" if status == 429 else "SERVER_ERROR", "later"), headers=headers)
        )

    assert (raised.value.code, raised.value.retry_after, raised.value.message) == (status, retry_after, "later")


@pytest.mark.parametrize("text", ["<html>bad gateway</html>", ""])
async def test_non_json_answers_are_unavailable(text):
    with pytest.raises(ProviderUnavailable):
        await create(answer(200, text=text))
    with pytest.raises(ProviderUnavailable):
        await create(answer(502, text=text))


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.PoolTimeout, httpx.ConnectError, httpx.ReadError]
)
async def test_timeouts_and_connection_errors_are_unavailable(exc_type):
    with pytest.raises(ProviderUnavailable, match="kvid.ai"):
        await create(raising(exc_type))


# --- query --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [("queued", State.PENDING), ("pending", State.PENDING), ("processing", State.PROCESSING)],
)
async def test_unfinished_job_is_read_from_status_alone(status, state):
    handler, seen = polled({"status": status})

    assert await query(handler) == Update(state)

    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/ai/generation/status")
    assert request.url.params["jobId"] == "img_1"
    assert request.headers["api-key"] == API_KEY


@pytest.mark.parametrize(
    ("result", "urls"),
    [
        ({"status": "completed", "result_url": IMG, "width": 1024, "height": 1024, "used_credit": 2}, (IMG,)),
        ({"status": "completed", "result_urls": [IMG, IMG2], "used_credit": 4}, (IMG, IMG2)),
        ({"status": "completed", "result_urls": [IMG, "", None]}, (IMG,)),
    ],
    ids=["result_url", "result_urls", "blank-entries"],
)
async def test_completed_job_fetches_the_result_and_succeeds_with_its_images(result, urls):
    handler, seen = polled({"status": "completed"}, result)

    update = await query(handler)

    assert update == Update(State.SUCCESS, image_urls=urls, credits=result.get("used_credit"))
    assert [r.url.path for r in seen] == ["/ai/generation/status", "/ai/generation/result"]
    assert seen[1].url.params["jobId"] == "img_1"
    assert seen[1].headers["api-key"] == API_KEY


@pytest.mark.parametrize(
    ("result", "fail_msg"),
    [
        ({"status": "failed", "error": "Safety check failed"}, "Safety check failed"),
        ({"status": "failed"}, "Generation failed"),
    ],
)
async def test_failed_job_fails_with_kvids_error_text(result, fail_msg):
    handler, _ = polled({"status": "failed"}, result)

    assert await query(handler) == Update(State.FAIL, fail_msg=fail_msg)


async def test_job_the_status_reports_failed_fails_even_if_the_result_omits_its_status():
    handler, _ = polled({"status": "failed"}, {"error": "Safety check failed"})

    assert await query(handler) == Update(State.FAIL, fail_msg="Safety check failed")


async def test_canceled_job_fails_without_asking_for_a_result():
    handler, seen = polled({"status": "canceled"})

    assert await query(handler) == Update(State.FAIL, fail_code="canceled", fail_msg="Canceled by kvid.ai")
    assert len(seen) == 1


@pytest.mark.parametrize("status", [{"status": "archived"}, {"status": None}, {}], ids=["unknown", "null", "missing"])
async def test_unknown_status_is_unavailable(status):
    handler, _ = polled(status)

    with pytest.raises(ProviderUnavailable):
        await query(handler)


@pytest.mark.parametrize(
    "result",
    [{"status": "completed"}, {"status": "completed", "result_url": ""}, {"status": "completed", "result_urls": []}],
    ids=["none", "blank", "empty-list"],
)
async def test_completed_result_without_a_url_is_unavailable(result):
    handler, _ = polled({"status": "completed"}, result)

    with pytest.raises(ProviderUnavailable, match="result_url"):
        await query(handler)


async def test_status_query_for_an_unknown_job_is_rejected():
    with pytest.raises(ProviderRejected, match="no such job"):
        await query(answer(404, failure("JOB_NOT_FOUND", "no such job")))


async def test_status_query_rate_limited_is_unavailable():
    with pytest.raises(ProviderUnavailable):
        await query(answer(429, failure("RATE_LIMITED", "slow down"), headers={"Retry-After": "3"}))


def test_kvid_models_are_polled_not_called_back():
    assert {spec.api.callback_route for name, spec in MODELS.items() if name.startswith("kvid/")} == {None}
