"""KieClient against a mocked Kie (httpx.MockTransport), and reading Kie's records and callbacks.

Wire shapes follow kie-api-facts §2 (createTask / recordInfo), §5 (market callbacks) and §7 (codes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.domain import State, Update
from app.errors import ProviderRejected, ProviderUnavailable
from app.providers.kie import KieClient, callback_task_id, read_callback, read_record

BASE = "https://kie.test"
API_KEY = "kie-secret-key"
CALLBACK = "https://gw.example.com/callbacks/kie/t1?token=abc"
PAYLOAD = {"model": "nano-banana-pro", "input": {"prompt": "a cat", "aspect_ratio": "16:9", "image_input": []}}
IMG = "https://tempfile.aiquickdraw.com/r/1.png"
IMG2 = "https://tempfile.aiquickdraw.com/r/2.png"

Handler = Callable[[httpx.Request], httpx.Response]


@asynccontextmanager
async def kie_answering(handler: Handler) -> AsyncIterator[KieClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield KieClient(http, BASE, API_KEY)


def answer(status: int = 200, body: Any = None, **kwargs: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=body, **kwargs)

    return handler


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return handler


async def create(handler: Handler) -> str:
    async with kie_answering(handler) as kie:
        return await kie.create_task(PAYLOAD, CALLBACK)


async def record(data: dict[str, Any]) -> Update:
    async with kie_answering(answer(body={"code": 200, "msg": "success", "data": data})) as kie:
        return await kie.record_info("task_1")


# --- createTask ---------------------------------------------------------------------------------


async def test_create_task_posts_payload_with_callback_and_bearer_key_and_returns_task_id():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": "task_abc"}})

    assert await create(handler) == "task_abc"

    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/api/v1/jobs/createTask"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.content) == {**PAYLOAD, "callBackUrl": CALLBACK}


async def test_create_task_accepts_snake_case_task_id():
    assert await create(answer(body={"code": 200, "msg": "success", "data": {"task_id": "task_snake"}})) == "task_snake"


@pytest.mark.parametrize("code", [429, 455, 500, 501, 550])
async def test_transient_body_code_on_http_200_is_unavailable_with_code_kept(code):
    with pytest.raises(ProviderUnavailable) as raised:
        await create(answer(body={"code": code, "msg": f"upstream says {code}"}))

    assert raised.value.code == code
    assert raised.value.message == f"upstream says {code}"


@pytest.mark.parametrize(
    ("header", "retry_after"),
    [({"Retry-After": "7"}, 7.0), ({"Retry-After": "1.5"}, 1.5), ({}, None), ({"Retry-After": "soon"}, None)],
)
async def test_http_429_carries_the_retry_after_hint(header, retry_after):
    with pytest.raises(ProviderUnavailable) as raised:
        await create(answer(429, {"code": 429, "msg": "Rate limited"}, headers=header))

    assert raised.value.code == 429
    assert raised.value.retry_after == retry_after
    assert raised.value.message == "Rate limited"


async def test_http_503_plain_text_is_unavailable():
    with pytest.raises(ProviderUnavailable) as raised:
        await create(answer(503, text="Service Unavailable"))

    assert raised.value.code == 503


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.PoolTimeout, httpx.ConnectError, httpx.ReadError]
)
async def test_timeouts_and_connection_errors_are_unavailable(exc_type):
    with pytest.raises(ProviderUnavailable):
        await create(raising(exc_type))


@pytest.mark.parametrize("code", [400, 401, 402, 404, 422, 433, 505])
@pytest.mark.parametrize("msg_key", ["msg", "message"])
async def test_definitive_body_code_is_rejected_with_upstream_message(code, msg_key):
    with pytest.raises(ProviderRejected) as raised:
        await create(answer(body={"code": code, msg_key: "Credits insufficient"}))

    assert raised.value.code == code
    assert raised.value.message == "Credits insufficient"


async def test_http_401_status_is_rejected_with_upstream_message():
    with pytest.raises(ProviderRejected) as raised:
        await create(answer(401, {"code": 401, "msg": "You do not have access permissions"}))

    assert (raised.value.code, raised.value.message) == (401, "You do not have access permissions")


@pytest.mark.parametrize("text", ["<html>gateway</html>", "", "{truncated"])
async def test_non_json_http_200_is_unavailable(text):
    with pytest.raises(ProviderUnavailable):
        await create(answer(200, text=text))


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "msg": "success", "data": {}},
        {"code": 200, "msg": "success", "data": {"taskId": ""}},
        {"code": 200, "msg": "success", "data": {"taskId": 12345}},
        {"code": 200, "msg": "success", "data": None},
        {"code": 200, "msg": "success"},
        {"code": 200, "msg": "success", "data": "task_abc"},
    ],
)
async def test_http_200_without_a_task_id_is_unavailable(body):
    with pytest.raises(ProviderUnavailable):
        await create(answer(body=body))


# --- recordInfo ---------------------------------------------------------------------------------


async def test_record_info_gets_record_by_task_id_with_bearer_key():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"state": "waiting"}})

    async with kie_answering(handler) as kie:
        await kie.record_info("task_42")

    [request] = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v1/jobs/recordInfo"
    assert request.url.params["taskId"] == "task_42"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    ("kie_state", "state"),
    [
        ("waiting", State.PENDING),
        ("queuing", State.PENDING),
        ("generating", State.PROCESSING),
        ("GENERATING", State.PROCESSING),
    ],
)
async def test_record_info_maps_unfinished_states(kie_state, state):
    assert await record({"taskId": "task_1", "state": kie_state, "resultJson": "", "failCode": ""}) == Update(state)


@pytest.mark.parametrize(
    "result_json",
    [json.dumps({"resultUrls": [IMG, IMG2]}), {"resultUrls": [IMG, IMG2]}],
    ids=["json-string", "object"],
)
async def test_record_info_success_gives_image_urls_and_cost_in_ms(result_json):
    update = await record(
        {"taskId": "task_1", "state": "success", "resultJson": result_json, "failCode": "", "costTime": 15000}
    )

    assert update == Update(State.SUCCESS, image_urls=(IMG, IMG2), cost_time_ms=15000)


async def test_record_info_fail_gives_fail_code_and_message():
    update = await record(
        {"taskId": "task_1", "state": "fail", "failCode": "422", "failMsg": "Content policy violation", "costTime": 900}
    )

    assert update == Update(State.FAIL, fail_code="422", fail_msg="Content policy violation", cost_time_ms=900)


async def test_record_info_fail_without_details_still_says_it_failed():
    update = await record({"taskId": "task_1", "state": "fail", "failCode": "", "failMsg": ""})

    assert (update.state, update.fail_code, update.fail_msg) == (State.FAIL, None, "Generation failed")


async def test_record_info_for_unknown_task_is_rejected():
    async with kie_answering(answer(body={"code": 404, "msg": "Task not found"})) as kie:
        with pytest.raises(ProviderRejected, match="Task not found"):
            await kie.record_info("task_missing")


async def test_record_info_without_data_is_unavailable():
    async with kie_answering(answer(body={"code": 200, "msg": "success", "data": None})) as kie:
        with pytest.raises(ProviderUnavailable):
            await kie.record_info("task_1")


@pytest.mark.parametrize(
    "data", [{"state": "archived"}, {"state": "success", "resultJson": "{not json"}], ids=["state", "resultJson"]
)
async def test_record_info_with_unreadable_record_is_unavailable(data):
    with pytest.raises(ProviderUnavailable):
        await record(data)


def test_read_record_ignores_missing_or_negative_cost_time():
    assert read_record({"state": "success", "costTime": -1}, cost_time_unit_ms=1).cost_time_ms is None
    assert read_record({"state": "success"}, cost_time_unit_ms=1).cost_time_ms is None


# --- callbacks ----------------------------------------------------------------------------------


def success_callback(**data: Any) -> dict[str, Any]:
    """A market success callback as in the nano-banana docs: costTime in seconds, resultJson a string."""
    return {
        "code": 200,
        "msg": "Playground task completed successfully.",
        "data": {
            "taskId": "task_cb",
            "model": "google/nano-banana",
            "state": "success",
            "param": json.dumps({"model": "google/nano-banana", "input": json.dumps({"prompt": "a cat"})}),
            "resultJson": json.dumps({"resultUrls": [IMG]}),
            "failCode": None,
            "failMsg": None,
            "costTime": 11,
            "completeTime": 1755599644000,
            "createTime": 1755599634000,
            "creditsConsumed": 4,
        }
        | data,
    }


def fail_callback() -> dict[str, Any]:
    return {
        "code": 501,
        "msg": "Playground task failed.",
        "data": {
            "taskId": "task_cb",
            "model": "google/nano-banana",
            "state": "fail",
            "param": "{}",
            "failCode": "500",
            "failMsg": "Internal server error",
            "costTime": 3,
            "creditsConsumed": 0,
        },
    }


def test_success_callback_gives_images_and_converts_seconds_to_ms():
    upstream_id, update = read_callback(success_callback())

    assert upstream_id == "task_cb"
    assert update == Update(State.SUCCESS, image_urls=(IMG,), cost_time_ms=11000, upstream_id="task_cb")


def test_success_callback_with_result_json_as_object():
    _, update = read_callback(success_callback(resultJson={"resultUrls": [IMG, IMG2]}))

    assert update.image_urls == (IMG, IMG2)


def test_fail_callback_gives_fail_code_and_message():
    upstream_id, update = read_callback(fail_callback())

    assert upstream_id == "task_cb"
    assert update == Update(
        State.FAIL, fail_code="500", fail_msg="Internal server error", cost_time_ms=3000, upstream_id="task_cb"
    )


@pytest.mark.parametrize(
    ("code", "state", "fail_msg"), [(200, State.SUCCESS, None), (501, State.FAIL, "Playground task failed.")]
)
def test_callback_without_state_is_decided_by_envelope_code(code, state, fail_msg):
    body = {"code": code, "msg": "Playground task failed.", "data": {"taskId": "task_cb"}}

    _, update = read_callback(body)

    assert (update.state, update.fail_msg) == (state, fail_msg)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"taskId": "top", "data": {"task_id": "snake", "taskId": "camel"}}, "snake"),
        ({"taskId": "top", "data": {"taskId": "camel"}}, "camel"),
        ({"taskId": "top", "data": {}}, "top"),
        ({"taskId": "top", "data": {"task_id": "", "taskId": None}}, "top"),
        ({"data": {"task_id": 7, "taskId": "camel"}}, "camel"),
    ],
)
def test_task_id_is_first_of_data_task_id_then_data_taskid_then_top_level(body, expected):
    body = {**body, "data": {**body["data"], "state": "success"}}

    assert callback_task_id(body) == expected
    upstream_id, update = read_callback(body)
    assert upstream_id == update.upstream_id == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([success_callback()], id="list"),
        pytest.param("task_cb", id="string"),
        pytest.param(None, id="null"),
        pytest.param({"code": 200, "msg": "ok", "taskId": "task_cb"}, id="no-data"),
        pytest.param({"code": 200, "taskId": "task_cb", "data": "success"}, id="data-not-object"),
        pytest.param({"code": 200, "data": {"state": "success", "resultJson": "{}"}}, id="no-task-id"),
        pytest.param({"code": 200, "taskId": "", "data": {"task_id": "", "taskId": ""}}, id="empty-task-ids"),
        pytest.param(success_callback(state="done"), id="unknown-state"),
        pytest.param(success_callback(resultJson='{"resultUrls": ['), id="result-json-invalid"),
    ],
)
def test_malformed_callback_is_a_value_error(body):
    with pytest.raises(ValueError):
        read_callback(body)


@pytest.mark.parametrize(("header", "expected"), [("inf", 3600.0), ("1e400", 3600.0), ("nan", None), ("-5", None)])
async def test_absurd_retry_after_is_bounded_or_ignored(header, expected):
    async with kie_answering(
        answer(status=429, body={"code": 429, "msg": "slow down"}, headers={"Retry-After": header})
    ) as kie:
        with pytest.raises(ProviderUnavailable) as caught:
            await kie.create_task({"model": "nano-banana-pro", "input": {}}, "https://cb")
    assert caught.value.retry_after == expected
