"""Property-based: whatever JSON, text, bytes and query parameters a client throws at any client
endpoint of a live gateway, the answer is never a server error, and every error is JSON."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.tasks.submit import callback_token
from tests.e2e.test_e2e_flow import submit
from tests.support.gateways import SECRET, Emulator, Gateway, StartGateway

FUZZ = settings(
    # More for a longer hunt: FUZZ_EXAMPLES=5000 make test-sqlite
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Any code point, lone surrogates included (JSON carries them as \ud800 escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=25,
)
GENERATE_FIELDS = [
    "prompt", "model", "aspectRatio", "resolution", "outputFormat", "imageInput",
    "negativePrompt", "seed", "numImages", "options", "webhookUrl",
]  # fmt: skip
GENERATE_BODIES = st.dictionaries(st.sampled_from(GENERATE_FIELDS) | ANY_TEXT, JSON_VALUES, max_size=6)
# Raw bytes, percent-encoded: invalid UTF-8, NUL, '&' and '=' all reach the server as sent.
URL_VALUES = st.binary(max_size=30).map(lambda raw: quote_from_bytes(raw, safe=""))
QUERY_NAMES = [
    "taskId", "wait", "limit", "cursor", "state", "model", "createdAfter",
    "after", "from", "to", "groupBy", "token",
]  # fmt: skip
QUERIES = st.dictionaries(st.sampled_from(QUERY_NAMES) | URL_VALUES, URL_VALUES, max_size=4)
# What h11 sends as a header value: printable ASCII, no surrounding spaces.
TEXT_HEADERS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
READ_PATHS = ["/api/images/status", "/api/images/tasks", "/api/images/events", "/api/usage", "/api/webhooks/deliveries"]


def assert_answered_well(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, str(response.request.url)[:300], response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json(), response.text[:300]


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: surrogates and NULs travel as escapes


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway whose sweeper leaves the fuzz's pending tasks be: checking every one of them upstream,
    every round, once they pass stale_after_s would only slow each example down."""
    return await start_gateway(stale_after_s=600)


@pytest.fixture
async def quiet_kie(kie: Emulator) -> Emulator:
    await kie.set_faults(generate_s=60)  # tasks the fuzz creates stay pending, quietly
    return kie


@FUZZ
@given(body=GENERATE_BODIES | JSON_VALUES, raw=st.booleans(), content_type=TEXT_HEADERS)
async def test_any_generate_body(client: httpx.AsyncClient, quiet_kie: Emulator, body, raw: bool, content_type) -> None:
    headers = {"Content-Type": content_type} if raw else {"Content-Type": "application/json"}
    assert_answered_well(await client.post("/api/images/generate", content=encoded(body), headers=headers))


@FUZZ
@given(raw=st.binary(max_size=200))
async def test_any_generate_bytes(client: httpx.AsyncClient, quiet_kie: Emulator, raw: bytes) -> None:
    assert_answered_well(await client.post("/api/images/generate", content=raw))


@FUZZ
@given(path=st.sampled_from(READ_PATHS), params=QUERIES)
async def test_any_query_on_any_read(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> None:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    assert_answered_well(await client.get(f"{path}?{query}"))


@FUZZ
@given(first=URL_VALUES, second=URL_VALUES)
async def test_any_path_segments(client: httpx.AsyncClient, first: str, second: str) -> None:
    first, second = first or "x", second or "0"
    assert_answered_well(await client.get(f"/api/images/{first}/files/{second}"))
    assert_answered_well(await client.post(f"/api/webhooks/deliveries/{first}/retry"))
    if first.startswith("ih_") is False:  # an existing task would open an event stream
        assert_answered_well(await client.get(f"/api/images/tasks/{first}/events"))


@FUZZ
@given(task=URL_VALUES, n=URL_VALUES, token=URL_VALUES | st.from_regex(r"[0-9]{1,14}\.[0-9a-f]{0,66}", fullmatch=True))
async def test_any_token_on_the_browser_links(client: httpx.AsyncClient, task: str, n: str, token: str) -> None:
    task, n = task or "x", n or "0"
    assert_answered_well(await client.get(f"/api/images/{task}/files/{n}?token={token}"))
    # No token the fuzz can make is genuine, so no event stream opens.
    assert_answered_well(await client.get(f"/api/images/tasks/{task}/events?token={token}"))
    assert_answered_well(await client.post(f"/api/images/tasks/{task}/read-token"))


@FUZZ
@given(body=JSON_VALUES, data=JSON_VALUES | ANY_TEXT.map(lambda text: "data:image/png;base64," + text))
async def test_any_upload(client: httpx.AsyncClient, quiet_kie: Emulator, body, data) -> None:
    assert_answered_well(await client.post("/api/uploads", content=encoded(body)))
    assert_answered_well(await client.post("/api/uploads", content=encoded({"data": data})))


@FUZZ
@given(body=JSON_VALUES, timestamp=TEXT_HEADERS, signature=TEXT_HEADERS)
async def test_any_callback_with_a_valid_token(
    gateway: Gateway, client: httpx.AsyncClient, quiet_kie: Emulator, body, timestamp: str, signature: str
) -> None:
    task_id = await submit(client)
    headers = {"X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": signature}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        for route in ("kie", "kie-4o", "kie-flux-kontext"):
            url = f"/callbacks/{route}/{task_id}/{callback_token(SECRET, task_id)}"
            assert_answered_well(await http.post(url, content=encoded(body), headers=headers))
