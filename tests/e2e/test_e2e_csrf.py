"""End to end: the auth_token cookie cannot be used by another site to change state (CSRF),
while the seed's own JSON + cookie calls and every Bearer call keep working."""

from __future__ import annotations

import httpx
import pytest

from app.db.tables import Task
from tests.support.database import count_rows
from tests.support.gateways import Emulator, Gateway, StartGateway

GENERATE = "/api/images/generate"
JSON = {"Content-Type": "application/json"}
BODY = b'{"prompt": "a red fox"}'


@pytest.fixture
async def cookie_client(gateway: Gateway, make_key) -> httpx.AsyncClient:
    key = await make_key("browser")
    async with httpx.AsyncClient(base_url=gateway.url, cookies={"auth_token": key}) as http:
        yield http


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "text/plain"}, id="text-plain"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form"),
        pytest.param({"Content-Type": "multipart/form-data; boundary=x"}, id="multipart"),
        pytest.param({}, id="no-content-type"),
        pytest.param(JSON | {"Origin": "https://evil.example"}, id="foreign-origin"),
        pytest.param(JSON | {"Origin": "null"}, id="opaque-origin"),
        pytest.param(JSON | {"Sec-Fetch-Site": "cross-site"}, id="cross-site-fetch"),
    ],
)
async def test_cookie_requests_that_may_come_from_another_site_are_refused(
    cookie_client: httpx.AsyncClient, kie: Emulator, sessions, headers: dict[str, str]
) -> None:
    response = await cookie_client.post(GENERATE, content=BODY, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"].startswith("Requests authenticated by the auth_token cookie that change state")
    assert await count_rows(sessions, Task) == 0 and (await kie.calls())["createTask"] == 0


@pytest.mark.parametrize("path", ["/api/uploads", "/api/webhooks/deliveries/1/retry"], ids=["upload", "retry-delivery"])
async def test_every_state_changing_route_checks_cookie_requests(cookie_client: httpx.AsyncClient, path: str) -> None:
    response = await cookie_client.post(path, content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(JSON, id="no-origin"),  # the seed's curl, or a server-side caller
        pytest.param(JSON | {"Origin": "{base}", "Sec-Fetch-Site": "same-origin"}, id="same-origin-browser"),
        pytest.param({"Content-Type": "application/json; charset=utf-8"}, id="json-with-charset"),
    ],
)
async def test_the_seeds_json_cookie_calls_keep_working(
    cookie_client: httpx.AsyncClient, gateway: Gateway, kie: Emulator, headers: dict[str, str]
) -> None:
    headers = {name: value.format(base=gateway.url) for name, value in headers.items()}
    response = await cookie_client.post(GENERATE, content=BODY, headers=headers)
    assert response.status_code == 200, response.text
    status = await cookie_client.get("/api/images/status", params={"taskId": response.json()["taskId"]})
    assert status.status_code == 200


async def test_reads_with_the_cookie_need_no_proof_of_origin(cookie_client: httpx.AsyncClient) -> None:
    response = await cookie_client.get("/api/images/tasks", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200


async def test_bearer_requests_are_unaffected(client: httpx.AsyncClient, kie: Emulator) -> None:
    headers = {"Content-Type": "text/plain", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = await client.post(GENERATE, content=BODY, headers=headers)
    assert response.status_code == 200, response.text


async def test_configured_origins_may_use_the_cookie(start_gateway: StartGateway, make_key, kie: Emulator) -> None:
    gateway = await start_gateway(allowed_origins=("https://app.example",))
    key = await make_key("browser")
    async with httpx.AsyncClient(base_url=gateway.url, cookies={"auth_token": key}) as http:
        allowed = await http.post(GENERATE, content=BODY, headers=JSON | {"Origin": "https://app.example"})
        refused = await http.post(GENERATE, content=BODY, headers=JSON | {"Origin": "https://other.example"})
    assert (allowed.status_code, refused.status_code) == (200, 403)
