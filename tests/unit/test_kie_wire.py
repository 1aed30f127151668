"""KieClient against a mocked Kie (httpx.MockTransport), and reading Kie's market records and callbacks.

Wire shapes follow kie-api-facts §2 (createTask / recordInfo), §4 (4o and Flux Kontext endpoints),
§5 (market callbacks) and §7 (codes). The 4o and Flux Kontext readers are in test_kie_dedicated.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.errors import ProviderRejected, ProviderUnavailable
from app.providers.catalogue import FLUX_KONTEXT, GPT4O, MARKET, MODELS, Api
from app.providers.kie.client import CALLBACK_READERS, KieClient
from app.providers.kie.market import callback_task_id, read_callback, read_record
from app.tasks.domain import State, Update
from app.tasks.validation import parse_generate
from tests.support.mock_http import Handler, answer, raising

BASE = "https://kie.test"
UPLOAD_BASE = "https://upload.kie.test"
API_KEY = "kie-secret-key"
CALLBACK = "https://gw.example.com/callbacks/kie/t1?token=abc"
SPEC = MODELS["nano-banana-pro"]
PAYLOAD = {"model": "nano-banana-pro", "input": {"prompt": "a cat", "aspect_ratio": "16:9"}}
IMG = "https://tempfile.aiquickdraw.com/r/1.png"
IMG2 = "https://tempfile.aiquickdraw.com/r/2.png"


@asynccontextmanager
async def kie_answering(handler: Handler) -> AsyncIterator[KieClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield KieClient(http, BASE, API_KEY, UPLOAD_BASE)


async def create(handler: Handler) -> str:
    async with kie_answering(handler) as kie:
        return await kie.create(SPEC, PAYLOAD, CALLBACK)


async def record(data: dict[str, Any], api: Api = MARKET) -> Update:
    async with kie_answering(answer(body={"code": 200, "msg": "success", "data": data})) as kie:
        return await kie.query(api, "task_1")


# --- create -------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("request_body", "path", "sent"),
    [
        (
            {"prompt": "a cat", "model": "google/nano-banana"},
            "/api/v1/jobs/createTask",
            {
                "model": "google/nano-banana",
                "input": {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "png"},
                "callBackUrl": CALLBACK,
            },
        ),
        (
            {"prompt": "a cat", "model": "gpt4o-image", "imageInput": [IMG], "numImages": 2},
            "/api/v1/gpt4o-image/generate",
            {"prompt": "a cat", "filesUrl": [IMG], "size": "1:1", "nVariants": 2, "callBackUrl": CALLBACK},
        ),
        (
            {"prompt": "a cat", "model": "flux-kontext-max", "imageInput": [IMG], "aspectRatio": "4:3"},
            "/api/v1/flux/kontext/generate",
            {
                "prompt": "a cat",
                "inputImage": IMG,
                "aspectRatio": "4:3",
                "outputFormat": "jpeg",
                "model": "flux-kontext-max",
                "callBackUrl": CALLBACK,
            },
        ),
    ],
    ids=["market", "4o", "flux-kontext"],
)
async def test_create_posts_each_apis_body_with_the_callback_to_its_own_path(request_body, path, sent):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": "task_api"}})

    submission = parse_generate(request_body)
    async with kie_answering(handler) as kie:
        assert await kie.create(submission.model, submission.payload, CALLBACK) == "task_api"

    [request] = seen
    assert (request.method, str(request.url)) == ("POST", BASE + path)
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.content) == sent


async def test_create_task_accepts_snake_case_task_id():
    assert await create(answer(body={"code": 200, "msg": "success", "data": {"task_id": "task_snake"}})) == "task_snake"


@pytest.mark.parametrize("code", [408, 429, 455, 500, 501, 503, 550])
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


@pytest.mark.parametrize("code", [400, 401, 402, 404, 422, 433, 451, 505])
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


@pytest.mark.parametrize("code", [402, 422, 429, 500, None])
async def test_every_kie_refusal_reaches_the_client_as_400_as_in_the_seed_gateway(code):
    async with kie_answering(answer()) as kie:
        assert kie.rejection_status(code) == 400


# --- query (record-info) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "path", "data", "update"),
    [
        (MARKET, "/api/v1/jobs/recordInfo", {"state": "waiting"}, Update(State.PENDING)),
        (GPT4O, "/api/v1/gpt4o-image/record-info", {"successFlag": 0}, Update(State.PROCESSING)),
        (
            FLUX_KONTEXT,
            "/api/v1/flux/kontext/record-info",
            {"successFlag": 1, "response": {"resultImageUrl": IMG}},
            Update(State.SUCCESS, image_urls=(IMG,)),
        ),
    ],
    ids=["market", "4o", "flux-kontext"],
)
async def test_query_gets_the_record_from_each_apis_own_path_and_reads_it_that_apis_way(api, path, data, update):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": "task_42", **data}})

    async with kie_answering(handler) as kie:
        assert await kie.query(api, "task_42") == update

    [request] = seen
    assert (request.method, request.url.path) == ("GET", path)
    assert request.url.params["taskId"] == "task_42"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    ("api", "data"),
    [(GPT4O, {"successFlag": 9}), (FLUX_KONTEXT, {"successFlag": None}), (GPT4O, {"state": "success"})],
)
async def test_unreadable_dedicated_record_is_unavailable(api, data):
    with pytest.raises(ProviderUnavailable, match="record unreadable"):
        await record(data, api)


async def test_query_refusal_from_a_dedicated_api_is_rejected_with_its_message():
    async with kie_answering(answer(body={"code": 404, "msg": "Task not found"})) as kie:
        with pytest.raises(ProviderRejected, match="Task not found"):
            await kie.query(GPT4O, "task_missing")


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
            await kie.query(MARKET, "task_missing")


async def test_record_info_without_data_is_unavailable():
    async with kie_answering(answer(body={"code": 200, "msg": "success", "data": None})) as kie:
        with pytest.raises(ProviderUnavailable):
            await kie.query(MARKET, "task_1")


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
    completed = datetime.fromtimestamp(1755599644, UTC)  # completeTime, in milliseconds
    assert update == Update(
        State.SUCCESS, image_urls=(IMG,), cost_time_ms=11000, upstream_id="task_cb", credits=4.0, completed_at=completed
    )


@pytest.mark.parametrize("complete_time", [None, "", "soon", 0, -5, 1e30, 99_999_999_999_999, True])
def test_an_implausible_completion_time_is_left_out(complete_time):
    body = success_callback()
    body["data"]["completeTime"] = complete_time
    assert read_callback(body)[1].completed_at is None


@pytest.mark.parametrize(
    ("fields", "credits"),
    [
        ({"creditsConsumed": 6}, 6.0),
        ({"creditsConsumed": None, "consumeCredits": 2.5}, 2.5),
        ({"creditsConsumed": -1}, None),
    ],
)
def test_callback_credits_read_from_either_documented_name(fields, credits):
    assert read_callback(success_callback(**fields))[1].credits == credits


def test_success_callback_with_result_json_as_object():
    _, update = read_callback(success_callback(resultJson={"resultUrls": [IMG, IMG2]}))

    assert update.image_urls == (IMG, IMG2)


def test_fail_callback_gives_fail_code_and_message():
    upstream_id, update = read_callback(fail_callback())

    assert upstream_id == "task_cb"
    assert update == Update(
        State.FAIL,
        fail_code="500",
        fail_msg="Internal server error",
        cost_time_ms=3000,
        upstream_id="task_cb",
        credits=0.0,
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


@pytest.mark.parametrize(
    ("route", "body", "update"),
    [
        (
            "kie",
            {
                "code": 200,
                "data": {"taskId": "t1", "state": "success", "resultJson": json.dumps({"resultUrls": [IMG]})},
            },
            Update(State.SUCCESS, image_urls=(IMG,), upstream_id="t1"),
        ),
        (
            "kie-4o",
            {"code": 200, "msg": "success", "data": {"taskId": "t1", "info": {"result_urls": [IMG]}}},
            Update(State.SUCCESS, image_urls=(IMG,), upstream_id="t1"),
        ),
        (
            "kie-flux-kontext",
            {"code": 200, "msg": "ok", "data": {"taskId": "t1", "info": {"resultImageUrl": IMG}}},
            Update(State.SUCCESS, image_urls=(IMG,), upstream_id="t1"),
        ),
    ],
)
def test_each_callback_route_reads_its_own_apis_callback(route, body, update):
    assert CALLBACK_READERS[route](body) == ("t1", update)


@pytest.mark.parametrize(("header", "expected"), [("inf", 3600.0), ("1e400", 3600.0), ("nan", None), ("-5", None)])
async def test_absurd_retry_after_is_bounded_or_ignored(header, expected):
    async with kie_answering(
        answer(status=429, body={"code": 429, "msg": "slow down"}, headers={"Retry-After": header})
    ) as kie:
        with pytest.raises(ProviderUnavailable) as caught:
            await kie.create(SPEC, PAYLOAD, CALLBACK)
    assert caught.value.retry_after == expected
