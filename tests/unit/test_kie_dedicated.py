"""Reading Kie's dedicated 4o Image and Flux Kontext APIs: record-info `data` and callback bodies.

Shapes follow kie-api-facts §4 (record-info: `successFlag`, results under `data.response`) and §5 (callbacks:
results under `data.info`, the envelope `code` saying success or failure).
"""

from __future__ import annotations

from typing import Any

import pytest

from app.providers.kie.dedicated import read_4o_callback, read_4o_record, read_flux_callback, read_flux_record
from app.tasks.domain import State, Update

IMG = "https://tempfile.aiquickdraw.com/s/1.png"
IMG2 = "https://tempfile.aiquickdraw.com/s/2.png"


# --- 4o record-info -----------------------------------------------------------------------------


def record_4o(**fields: Any) -> dict[str, Any]:
    """A 4o record-info `data` as in the quickstart examples."""
    return {
        "taskId": "task_4o",
        "paramJson": '{"prompt":"a cat","size":"1:1"}',
        "completeTime": "2025-05-01 12:00:30",
        "createTime": "2025-05-01 12:00:00",
        "progress": "1.00",
        "errorCode": None,
        "errorMessage": None,
    } | fields


@pytest.mark.parametrize(
    ("data", "update"),
    [
        (record_4o(successFlag=0, status="GENERATING", progress="0.40", response=None), Update(State.PROCESSING)),
        (
            record_4o(successFlag=1, status="SUCCESS", response={"result_urls": [IMG, IMG2]}),
            Update(State.SUCCESS, image_urls=(IMG, IMG2)),
        ),
        (
            record_4o(successFlag=1, status="SUCCESS", response={"resultUrls": [IMG]}),  # the OpenAPI spelling
            Update(State.SUCCESS, image_urls=(IMG,)),
        ),
        (record_4o(successFlag="1", response={"result_urls": [IMG]}), Update(State.SUCCESS, image_urls=(IMG,))),
        (
            record_4o(successFlag=2, status="GENERATE_FAILED", errorCode=400, errorMessage="Content policy violation"),
            Update(State.FAIL, fail_code="400", fail_msg="Content policy violation"),
        ),
        (
            record_4o(successFlag=2, status="CREATE_TASK_FAILED", errorCode=451, errorMessage="Failed to fetch image"),
            Update(State.FAIL, fail_code="451", fail_msg="Failed to fetch image"),
        ),
        (record_4o(successFlag=2), Update(State.FAIL, fail_code=None, fail_msg="Generation failed")),
    ],
    ids=["generating", "success-result_urls", "success-resultUrls", "flag-as-string", "fail", "create-fail", "bare"],
)
def test_4o_record_reads_success_flag_results_and_errors(data, update):
    assert read_4o_record(data) == update


def test_4o_record_keeps_only_string_urls():
    data = record_4o(successFlag=1, response={"result_urls": [IMG, "", None, 7, IMG2]})

    assert read_4o_record(data).image_urls == (IMG, IMG2)


@pytest.mark.parametrize("flag", [3, -1, None, "done", [1]])
def test_4o_record_with_an_unknown_success_flag_is_a_value_error(flag):
    with pytest.raises(ValueError, match="successFlag"):
        read_4o_record(record_4o(successFlag=flag))


def test_4o_record_without_a_success_flag_is_a_value_error():
    with pytest.raises(ValueError, match="successFlag"):
        read_4o_record({"taskId": "task_4o", "status": "SUCCESS", "response": {"result_urls": [IMG]}})


# --- Flux Kontext record-info -------------------------------------------------------------------


def record_flux(**fields: Any) -> dict[str, Any]:
    return {"taskId": "task_fk", "paramJson": "{}", "completeTime": 1755599644000, "createTime": 1755599634000} | fields


@pytest.mark.parametrize(
    ("data", "update"),
    [
        (record_flux(successFlag=0, response=None), Update(State.PROCESSING)),
        (
            record_flux(successFlag=1, response={"originImageUrl": IMG2, "resultImageUrl": IMG}),
            Update(State.SUCCESS, image_urls=(IMG,)),  # the origin image is the input, not a result
        ),
        (
            record_flux(successFlag=2, errorCode=400, errorMessage="Prompt flagged"),
            Update(State.FAIL, fail_code="400", fail_msg="Prompt flagged"),
        ),
        (
            record_flux(successFlag=3, errorCode=501, errorMessage="Generation failed upstream"),
            Update(State.FAIL, fail_code="501", fail_msg="Generation failed upstream"),
        ),
        (record_flux(successFlag=3, errorCode=None, errorMessage=""), Update(State.FAIL, fail_msg="Generation failed")),
    ],
    ids=["generating", "success", "create-task-failed", "generate-failed", "fail-without-details"],
)
def test_flux_record_reads_success_flag_results_and_errors(data, update):
    assert read_flux_record(data) == update


@pytest.mark.parametrize("flag", [4, -1, None, "x"])
def test_flux_record_with_an_unknown_success_flag_is_a_value_error(flag):
    with pytest.raises(ValueError, match="successFlag"):
        read_flux_record(record_flux(successFlag=flag))


# --- callbacks ----------------------------------------------------------------------------------


def callback(code: int, info: Any, msg: str = "success", **ids: str) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": (ids or {"taskId": "task_cb"}) | {"info": info}}


@pytest.mark.parametrize(
    ("read", "body", "update"),
    [
        (
            read_4o_callback,
            callback(200, {"result_urls": [IMG, IMG2]}),
            Update(State.SUCCESS, image_urls=(IMG, IMG2), upstream_id="task_cb"),
        ),
        (
            read_4o_callback,
            callback(400, None, "Your content was flagged by OpenAI as violating content policies"),
            Update(
                State.FAIL,
                fail_code="400",
                fail_msg="Your content was flagged by OpenAI as violating content policies",
                upstream_id="task_cb",
            ),
        ),
        (
            read_4o_callback,
            callback(451, None, "Failed to download filesUrl"),
            Update(State.FAIL, fail_code="451", fail_msg="Failed to download filesUrl", upstream_id="task_cb"),
        ),
        (
            read_flux_callback,
            callback(200, {"originImageUrl": IMG2, "resultImageUrl": IMG}, "BFL image generated successfully."),
            Update(State.SUCCESS, image_urls=(IMG,), upstream_id="task_cb"),
        ),
        (
            read_flux_callback,
            callback(501, {"originImageUrl": "", "resultImageUrl": ""}, "Image generation failed"),
            Update(State.FAIL, fail_code="501", fail_msg="Image generation failed", upstream_id="task_cb"),
        ),
        (
            read_flux_callback,
            callback(500, {"originImageUrl": "", "resultImageUrl": ""}, ""),
            Update(State.FAIL, fail_code="500", fail_msg="Generation failed", upstream_id="task_cb"),
        ),
    ],
    ids=["4o-success", "4o-policy", "4o-download", "flux-success", "flux-501", "flux-500-no-msg"],
)
def test_callback_envelope_code_decides_and_results_are_read_from_info(read, body, update):
    assert read(body) == ("task_cb", update)


@pytest.mark.parametrize("read", [read_4o_callback, read_flux_callback])
@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ({"taskId": "camel"}, "camel"),
        ({"task_id": "snake"}, "snake"),
        ({"task_id": "snake", "taskId": "camel"}, "snake"),
    ],
)
def test_callback_task_id_comes_from_data_task_id_or_data_taskid_and_is_set_on_the_update(read, ids, expected):
    upstream_id, update = read(callback(200, {}, **ids))

    assert upstream_id == update.upstream_id == expected


@pytest.mark.parametrize("read", [read_4o_callback, read_flux_callback])
def test_callback_falls_back_to_a_top_level_task_id(read):
    body = {"code": 200, "msg": "success", "taskId": "top", "data": {"info": {}}}

    assert read(body)[0] == "top"


@pytest.mark.parametrize("read", [read_4o_callback, read_flux_callback])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="null"),
        pytest.param([callback(200, {})], id="list"),
        pytest.param("task_cb", id="string"),
        pytest.param({"code": 200, "msg": "success", "taskId": "task_cb"}, id="no-data"),
        pytest.param({"code": 200, "taskId": "task_cb", "data": None}, id="data-null"),
        pytest.param({"code": 200, "taskId": "task_cb", "data": "done"}, id="data-not-object"),
        pytest.param({"code": 200, "data": {"info": {"result_urls": [IMG]}}}, id="no-task-id"),
        pytest.param({"code": 200, "taskId": "", "data": {"taskId": "", "task_id": None}}, id="empty-task-ids"),
    ],
)
def test_malformed_callback_is_a_value_error(read, body):
    with pytest.raises(ValueError):
        read(body)
