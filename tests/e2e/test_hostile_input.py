"""End to end: each class of malformed input gets a 4xx JSON error naming what is wrong, stores
nothing, takes no upstream create slot and sends nothing upstream (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest

from app.db.tables import CallbackEvent, IdempotencyKey, Task, TaskEvent, UpstreamSend
from app.providers.kie import signature as kie_signature
from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts, count_rows, load_task
from tests.support.gateways import HMAC_KEY, Emulator, market_callback

DEEP = b"[" * 100_000
NESTED_40 = {"prompt": "a fox", "options": json.loads("[" * 40 + "]" * 40)}
TOO_FAR = "0001-01-01T00:00:00+01:00"
TOO_FAR_IN_URL = TOO_FAR.replace("+", "%2B")
TOO_LATE = "9999-12-31T23:59:59-01:00"


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def raw_json(text: str) -> dict[str, object]:
    """A body sent exactly as written: JSON escapes such as \\ud800 that no encoder would produce."""
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


GENERATE = "/api/images/generate"
BODY_CASES = [
    ("deep array", {"content": DEEP}, "Request body is not acceptable: JSON is nested deeper than 32 levels"),
    ("deep options", {"json": NESTED_40}, "Request body is not acceptable: JSON is nested deeper than 32 levels"),
    ("lone surrogate", raw_json('{"prompt": "a \\ud800 b"}'), "Request body: prompt contains a lone UTF-16 surrogate"),
    ("NUL in prompt", raw_json('{"prompt": "a \\u0000 b"}'), "Request body: prompt contains a NUL character"),
    (
        "surrogate in imageInput",
        raw_json('{"prompt": "p", "imageInput": ["https://a.example/\\udfff.png"]}'),
        "Request body: imageInput[0] contains a lone UTF-16 surrogate",
    ),
    (
        "NUL in an option name",
        raw_json('{"prompt": "p", "options": {"a\\u0000": 1}}'),
        "Request body: a field name contains a NUL character",
    ),
    (
        "NUL in a webhook URL",
        raw_json('{"prompt": "p", "webhookUrl": "https://a.example/\\u0000"}'),
        "Request body: webhookUrl contains a NUL",
    ),
    ("huge number", raw_json('{"prompt": "p", "seed": 1' + "0" * 5000 + "}"), "Request body is not valid JSON"),
]


@pytest.mark.parametrize(("name", "request_args", "error"), BODY_CASES, ids=[case[0] for case in BODY_CASES])
async def test_generate_bodies_that_cannot_be_stored_or_sent_are_refused(
    client: httpx.AsyncClient, kie: Emulator, sessions, name: str, request_args: dict, error: str
) -> None:
    args = dict(request_args)
    headers = {"Idempotency-Key": "k1"} | args.pop("headers", {})
    response = await client.post(GENERATE, headers=headers, **args)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error)
    await assert_nothing_stored_or_sent(sessions, kie)


async def assert_nothing_stored_or_sent(sessions, kie: Emulator) -> None:
    for table in (Task, TaskEvent, IdempotencyKey, UpstreamSend):
        assert await count_rows(sessions, table) == 0, table.__tablename__
    calls = await kie.calls()
    assert calls["createTask"] == 0 and calls["upload"] == 0


READ_CASES = [
    ("/api/images/status?taskId=ih_%00abc", 400, "Request query string contains a NUL character"),
    ("/api/images/status?taskId=ih_a%20b", 400, "taskId is not a valid task id"),
    ("/api/images/status?taskId=" + "a" * 41, 400, "taskId is not a valid task id"),
    ("/api/images/tasks?model=nano%00", 400, "Request query string contains a NUL character"),
    ("/api/images/tasks?model=nano", 400, "Unknown model 'nano'"),
    ("/api/images/tasks/ih_%00x/events", 400, "Request path contains a NUL character"),
    ("/api/images/tasks/ih_%E2%82%AC/events", 400, "taskId is not a valid task id"),
    ("/api/images/tasks?limit=%C2%B2", 400, "limit must be an integer from 1 to 100"),
    ("/api/images/tasks?limit=%D9%A3", 400, "limit must be an integer from 1 to 100"),
    ("/api/images/tasks?limit=" + "9" * 5000, 400, "limit must be an integer from 1 to 100"),
    ("/api/images/events?after=99999999999999999999", 400, "after must be an event id"),
    ("/api/images/events?after=-1", 400, "after must be an event id"),
    ("/api/images/events?limit=%C2%B2", 400, "limit must be an integer from 1 to 500"),
    ("/api/webhooks/deliveries?limit=0", 400, "limit must be an integer from 1 to 200"),
    ("/api/webhooks/deliveries?taskId=x%20y", 400, "taskId is not a valid task id"),
    (f"/api/images/tasks?createdAfter={TOO_FAR_IN_URL}", 400, "createdAfter is out of range"),
    (f"/api/images/tasks?createdAfter={TOO_LATE}", 400, "createdAfter is out of range"),
    ("/api/images/tasks?createdAfter=2026-01-01T00:00:00", 400, "createdAfter must include a time zone"),
    (f"/api/usage?from={TOO_FAR_IN_URL}", 400, "from is out of range"),
    (f"/api/usage?to={TOO_LATE}", 400, "to is out of range"),
    ("/api/images/tasks?cursor=" + cursor_of([TOO_FAR, "ih_x"]), 400, "cursor is invalid"),
    ("/api/images/tasks?cursor=" + cursor_of(["2026-01-01T00:00:00", "ih_x"]), 400, "cursor is invalid"),
    ("/api/images/tasks?cursor=" + cursor_of(["2026-01-01T00:00:00Z", "ih\u0000"]), 400, "cursor is invalid"),
    ("/api/images/tasks?cursor=" + base64.urlsafe_b64encode(DEEP[:5000]).decode(), 400, "cursor is invalid"),
    ("/api/images/tasks?cursor=%FF%FE", 400, "cursor is invalid"),
    ("/api/images/ih_abc/files/" + "9" * 5000, 404, "File not found"),
    ("/api/images/ih_abc/files/99999999999", 404, "File not found"),
    ("/api/images/ih_%C3%A9/files/0", 404, "File not found"),
]


@pytest.mark.parametrize(("path", "status", "error"), READ_CASES)
async def test_reads_with_values_the_database_cannot_hold_are_refused(
    client: httpx.AsyncClient, path: str, status: int, error: str
) -> None:
    response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(error)


@pytest.mark.parametrize("delivery_id", ["9" * 5000, "99999999999", "%C2%B2", "0"])
async def test_retrying_a_delivery_that_cannot_exist_is_not_found(client: httpx.AsyncClient, delivery_id: str) -> None:
    response = await client.post(f"/api/webhooks/deliveries/{delivery_id}/retry")
    assert (response.status_code, response.json()) == (404, {"error": "Delivery not found"})


async def test_a_nul_in_a_header_value_is_refused(gateway, make_key) -> None:
    """Clients refuse to send one, so the request is written by hand."""
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = await make_key()
    writer.write(
        f"GET /api/images/status?taskId=ih_x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "X-Note: a\x00b\r\nConnection: close\r\n\r\n".encode()
    )
    answer = await reader.read()
    writer.close()
    assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:200]


# --- uploads


@pytest.mark.parametrize(
    ("request_args", "error"),
    [
        ({"content": b'{"data": ' + DEEP}, "Request body is not acceptable: JSON is nested deeper than 32 levels"),
        (raw_json('{"data": "\\ud800"}'), "Request body: data contains a lone UTF-16 surrogate"),
        ({"json": {"data": "data:image/png;base64"}}, "data: URL has no comma"),
    ],
)
async def test_uploads_with_bodies_that_cannot_be_read_are_refused(
    client: httpx.AsyncClient, kie: Emulator, sessions, request_args: dict, error: str
) -> None:
    response = await client.post("/api/uploads", **request_args)
    assert response.status_code == 400, response.text
    assert error in response.json()["error"]
    await assert_nothing_stored_or_sent(sessions, kie)


# --- callbacks with a valid URL token


async def slow_task(client: httpx.AsyncClient, kie: Emulator) -> tuple[str, dict]:
    await kie.set_faults(generate_s=60)
    task_id = await submit(client)
    (upstream,) = await kie.tasks()
    return task_id, upstream


def signed_headers(upstream_id: str, timestamp: str | None = None, key: str = HMAC_KEY) -> dict[str, str]:
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    return {
        kie_signature.TIMESTAMP_HEADER: timestamp,
        kie_signature.SIGNATURE_HEADER: kie_signature.sign(key, upstream_id, timestamp),
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(
    ("body", "status", "verdict"),
    [
        (DEEP, 400, "rejected:malformed"),
        (b'{"a":"\x00"}', 400, "rejected:malformed"),
        (b"\xff\xfe not JSON", 400, "rejected:malformed"),
        # Readable, but naming no task id, so no signature can be valid for it.
        (b'{"a":"\\u0000"}', 401, "rejected:signature"),
        (b'{"a":"\\ud800"}', 401, "rejected:signature"),
        (b'{"data": {"taskId": "\\u0000"}}', 401, "rejected:signature"),
    ],
)
async def test_unreadable_callbacks_are_refused_kept_and_change_nothing(
    client: httpx.AsyncClient, kie: Emulator, sessions, body: bytes, status: int, verdict: str
) -> None:
    task_id, upstream = await slow_task(client, kie)
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], content=body, headers=signed_headers(upstream["taskId"]))
    assert response.status_code == status and "error" in response.json()
    assert await callback_verdicts(sessions, task_id) == [verdict]
    assert (await load_task(sessions, task_id)).state == "pending"


@pytest.mark.parametrize(
    ("signed", "verdict"), [(False, "rejected:signature"), (True, "rejected:timestamp")], ids=["unsigned", "signed"]
)
async def test_a_400_digit_timestamp_is_refused(
    client: httpx.AsyncClient, kie: Emulator, sessions, signed: bool, verdict: str
) -> None:
    task_id, upstream = await slow_task(client, kie)
    timestamp = "9" * 400
    headers = signed_headers(upstream["taskId"], timestamp, key=HMAC_KEY if signed else "another key")
    body = market_callback(upstream["taskId"], "success")
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], json=body, headers=headers)
    assert response.status_code == 401
    assert await callback_verdicts(sessions, task_id) == [verdict]
    assert (await load_task(sessions, task_id)).state == "pending"


@pytest.mark.parametrize("cost", ["1e308", "Infinity", "-Infinity", "NaN", "1" + "0" * 400, "-5", '"soon"'])
async def test_a_callback_with_an_absurd_cost_time_is_applied_without_it(
    client: httpx.AsyncClient, kie: Emulator, cost: str
) -> None:
    task_id, upstream = await slow_task(client, kie)
    body = json.dumps(market_callback(upstream["taskId"], "success", costTime=0)).replace(
        '"costTime": 0', f'"costTime": {cost}'
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], content=body, headers=signed_headers(upstream["taskId"]))
    assert response.status_code == 200, response.text
    status = (await client.get("/api/images/status", params={"taskId": task_id})).json()
    assert (status["state"], status["costTime"]) == ("success", None)


async def test_text_a_callback_carries_is_stored_cleaned(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    task_id, upstream = await slow_task(client, kie)
    body = market_callback(upstream["taskId"], "fail", failMsg="bad\u0000news \ud800", failCode="5" * 100)
    content = json.dumps(body).encode()  # ensure_ascii: the NUL and the surrogate travel as escapes
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], content=content, headers=signed_headers(upstream["taskId"]))
    assert response.status_code == 200, response.text
    status = (await client.get("/api/images/status", params={"taskId": task_id})).json()
    assert (status["state"], status["failMsg"]) == ("fail", "bad\ufffdnews \ufffd")
    assert (await load_task(sessions, task_id)).fail_code == "5" * 20
    assert await count_rows(sessions, CallbackEvent) == 1
