"""End to end: the client API's contract — errors, auth, isolation, and reads that never go upstream."""

from __future__ import annotations

import httpx
import pytest

from app.db.migrate import downgrade, upgrade
from app.db.tables import CallbackEvent, Task
from tests.e2e.test_e2e_flow import submit
from tests.support.database import count_rows
from tests.support.gateways import Emulator, Gateway, StartGateway, wait_for_state

LONG = "x" * 10001


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "Prompt is required"),
        ({"prompt": ""}, "Prompt is required"),
        ({"prompt": "   \n"}, "Prompt is required"),
        ({"prompt": 42}, "prompt must be a string"),
        ({"prompt": LONG}, "prompt is too long for model nano-banana-pro: 10001 characters, maximum 10000"),
        ({"prompt": "p", "model": "dall-e"}, "Unknown model 'dall-e'"),
        ({"prompt": "p", "aspectRatio": "7:3"}, "aspectRatio '7:3' is not valid for model nano-banana-pro: must be"),
        ({"prompt": "p", "resolution": "8K"}, "resolution '8K' is not valid for model nano-banana-pro"),
        ({"prompt": "p", "outputFormat": "gif"}, "outputFormat 'gif' is not valid for model nano-banana-pro"),
        ({"prompt": "p", "aspectRatio": 16}, "aspectRatio 16 is not valid for model nano-banana-pro"),
        ({"prompt": "p", "numImages": 2}, "numImages is not supported by model nano-banana-pro"),
        ({"prompt": "p", "options": {"style": "AUTO"}}, "options.style is not supported by model nano-banana-pro"),
        ({"prompt": "p", "model": "gpt4o-image", "numImages": 3}, "numImages 3 is not valid for model gpt4o-image"),
        ({"prompt": "p", "model": "kvid/image-to-image"}, "imageInput needs at least one image URL"),
        ({"prompt": "p", "model": "google/nano-banana", "resolution": "2K"}, "resolution is not supported"),
        ({"prompt": "p", "imageInput": "https://a.example/x.png"}, "imageInput must be an array of URL strings"),
        ({"prompt": "p", "imageInput": ["https://a.example/x.png"] * 9}, "imageInput has 9 images"),
        ({"prompt": "p", "imageInput": ["/local/file.png"]}, "imageInput[0] must be an absolute http(s) URL"),
        ({"prompt": "p", "imageInput": ["ftp://a.example/x.png"]}, "imageInput[0] must be an absolute http(s) URL"),
        ({"prompt": "p", "model": "google/nano-banana-edit"}, "imageInput needs at least one image URL"),
        ({"prompt": "p", "colour": "red"}, "Unknown field 'colour'"),
        (["prompt"], "Request body must be a JSON object"),
    ],
)
async def test_bad_input_is_rejected_naming_the_problem_and_nothing_is_stored_or_sent(
    client: httpx.AsyncClient, kie: Emulator, sessions, body: object, error: str
) -> None:
    response = await client.post("/api/images/generate", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert (await kie.calls())["createTask"] == 0
    assert await count_rows(sessions, Task) == 0


async def test_malformed_json_is_a_400(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    response = await client.post(
        "/api/images/generate", content=b'{"prompt": "a fox",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("Request body is not valid JSON")
    assert (await kie.calls())["createTask"] == 0 and await count_rows(sessions, Task) == 0


async def test_body_over_one_mebibyte_is_a_413(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    response = await client.post("/api/images/generate", json={"prompt": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    assert (await kie.calls())["createTask"] == 0 and await count_rows(sessions, Task) == 0


async def test_callback_body_over_the_limit_is_a_413(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    await kie.set_faults(generate_s=60)
    task_id = await submit(client)
    (upstream,) = await kie.tasks()
    async with httpx.AsyncClient() as http:
        response = await http.post(upstream["callBackUrl"], content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert (await client.get("/api/images/status", params={"taskId": task_id})).json()["state"] == "pending"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ih_not-a-key"}, {"Authorization": "Basic abc"}])
async def test_requests_without_a_valid_key_are_401(
    gateway: Gateway, kie: Emulator, sessions, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        generate = await http.post("/api/images/generate", json={"prompt": "a red fox"})
        status = await http.get("/api/images/status", params={"taskId": "ih_x"})
    assert generate.status_code == status.status_code == 401
    assert generate.json() == {"error": "Missing or invalid API key"}
    assert (await kie.calls())["createTask"] == 0 and await count_rows(sessions, Task) == 0


async def test_seed_cookie_authenticates(gateway: Gateway, kie: Emulator, make_key) -> None:
    await kie.set_faults(generate_s=0.1)
    async with httpx.AsyncClient(base_url=gateway.url, cookies={"auth_token": await make_key()}) as http:
        task_id = await submit(http)
        assert (await wait_for_state(http, task_id, {"success"}))["state"] == "success"


async def test_one_client_cannot_see_another_clients_task(
    gateway: Gateway, client: httpx.AsyncClient, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=0.1)
    task_id = await submit(client)
    headers = {"Authorization": f"Bearer {await make_key('other')}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as other:
        theirs = await other.get("/api/images/status", params={"taskId": task_id})
        unknown = await other.get("/api/images/status", params={"taskId": "ih_does-not-exist"})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json() == {"error": "Task not found"}
    assert (await client.get("/api/images/status", params={"taskId": task_id})).status_code == 200


@pytest.mark.parametrize("query", [{}, {"taskId": ""}, {"taskId": "  "}])
async def test_status_without_task_id_is_a_400(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    response = await client.get("/api/images/status", params=query)
    assert response.status_code == 400
    assert response.json() == {"error": "taskId is required"}


async def test_status_reads_never_call_upstream(start_gateway: StartGateway, kie: Emulator, client_of) -> None:
    gateway = await start_gateway(stale_after_s=60)
    await kie.set_faults(generate_s=60)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        for _ in range(50):
            body = (await client.get("/api/images/status", params={"taskId": task_id})).json()
            assert body["state"] == "pending"
    assert set(body) >= {"taskId", "state", "imageUrl", "imageUrls", "failMsg", "costTime", "model", "createdAt"}
    calls = await kie.calls()
    assert (calls["createTask"], calls["recordInfo"]) == (1, 0)


async def test_missing_kie_key_is_a_500_and_nothing_is_stored(
    start_gateway: StartGateway, kie: Emulator, client_of, sessions
) -> None:
    gateway = await start_gateway(kieai_api_key=None)
    async with client_of(gateway) as client:
        response = await client.post("/api/images/generate", json={"prompt": "a red fox"})
    assert response.status_code == 500
    assert response.json() == {"error": "Kie.ai API key not configured"}
    assert (await kie.calls())["createTask"] == 0 and await count_rows(sessions, Task) == 0


async def test_health_and_readiness(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        unknown = await http.get("/nope")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_callbacks_to_unknown_routes_store_nothing(gateway: Gateway, sessions) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post("/callbacks/kie/ih_x", json={})
    assert response.status_code == 404
    assert await count_rows(sessions, CallbackEvent) == 0


async def test_not_ready_while_the_schema_is_behind_the_migrations(start_gateway: StartGateway, engine) -> None:
    # No sweeper: nothing may touch the tables while the schema is dropped under it.
    gateway = await start_gateway(sweep_interval_s=0)
    await downgrade(engine, "base")
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            behind = await http.get("/readyz")
    finally:
        await upgrade(engine)
    assert behind.status_code == 503
    assert behind.json()["status"] == "unavailable" and behind.json()["migration"] is None
