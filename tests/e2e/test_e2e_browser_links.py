"""End to end: links a browser can follow without an Authorization header, against a gateway and the Kie
emulator over loopback. A signed file URL from a status object gives the image to a plain client with no
key (from a bucket too, through the presigned redirect), and nothing else: an expired, altered, other
image's or other task's token is refused. A read token opens its own task's event stream and no other.
Neither ever reaches a log. In a real Chromium, on a page of another origin, `<img src=signed URL>`
loads and `new EventSource(url?token=...)` receives the task's status."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.tasks import links
from tests.e2e.test_e2e_copies import own_url, status_once_copied, upstream_bytes
from tests.e2e.test_e2e_flow import submit
from tests.support.clock import SteppedClock
from tests.support.gateways import SECRET, ClientOf, Emulator, StartGateway, StartServer, gateway_env
from tests.support.servers import ProcessServer, ThreadServer, free_port

NOT_FOR_THIS_FILE = {"error": "token is not valid for this file"}
NOT_FOR_THIS_TASK = {"error": "token is not valid for this task"}
MULTI_IMAGE = {"model": "bytedance/seedream-v4-text-to-image", "numImages": 2}


def token_of(url: str) -> str:
    return url.split("?token=", 1)[1]


def tampered(token: str) -> str:
    """The token with its signature's last digit changed."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


async def signed_status(client: httpx.AsyncClient, base_url: str, task_id: str) -> dict[str, Any]:
    """The task's status once every image is served from imagehook's copy, so every signed URL carries a token."""
    status = await status_once_copied(client, base_url, task_id)
    for n, url in enumerate(status["signedImageUrls"]):
        assert url.startswith(own_url(base_url, task_id, n) + "?token="), status
    assert status["imageUrls"] == [own_url(base_url, task_id, n) for n in range(len(status["imageUrls"]))]
    return status


async def events(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """An event stream's response and the statuses it sent, read until it closes (at the terminal state)."""
    statuses = []
    async with http.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                statuses.append(json.loads(line.removeprefix("data: ")))
    return response, statuses


async def read_token(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.post(f"/api/images/tasks/{task_id}/read-token")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_signed_url_gives_its_image_to_anyone_until_it_expires_and_nothing_else(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, sessions: Any
) -> None:
    clock = SteppedClock()
    gateway = await start_gateway(clock=clock)
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as client, httpx.AsyncClient() as anyone:
        pair, single = await submit(client, **MULTI_IMAGE), await submit(client)
        status = await signed_status(client, gateway.url, pair)
        other = await signed_status(client, gateway.url, single)
        first, second = status["signedImageUrls"]
        assert status["signedUrlsExpireAt"] is not None

        for url, content in zip((first, second), await upstream_bytes(sessions, pair), strict=True):
            image = await anyone.get(url)
            assert image.status_code == 200 and image.content == content and content.startswith(b"\x89PNG")
            assert image.headers["content-type"] == "image/png"
            assert image.headers["access-control-allow-origin"] == "*"  # a page of any origin may use it
        ranged = await anyone.get(first, headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and ranged.content == b"\x89PNG\r\n\x1a\n"

        refusals = {
            first.replace("?token=", "?token=x"): {"error": "token is malformed"},
            f"{own_url(gateway.url, pair, 0)}?token={tampered(token_of(first))}": NOT_FOR_THIS_FILE,
            f"{own_url(gateway.url, pair, 1)}?token={token_of(first)}": NOT_FOR_THIS_FILE,  # another image
            f"{own_url(gateway.url, single, 0)}?token={token_of(first)}": NOT_FOR_THIS_FILE,  # another task
            f"{own_url(gateway.url, pair, 0)}?token={token_of(other['signedImageUrls'][0])}": NOT_FOR_THIS_FILE,
        }
        for url, error in refusals.items():
            refused = await anyone.get(url)
            assert (refused.status_code, refused.json()) == (403, error), url
            # The token decides: the owner's key does not rescue a bad one.
            assert (await client.get(url)).status_code == 403, url
        # A genuine token of a file that does not exist opens nothing.
        expires = int(clock().timestamp()) + 600
        missing = f"{own_url(gateway.url, pair, 2)}?token={links.file_token(SECRET, pair, 2, expires)}"
        assert (await anyone.get(missing)).status_code == 404

        # Reads within a bucket serve the same cached bytes; past the body's margin it is signed anew.
        ttl_s, bucket = gateway.settings.signed_url_ttl_s, links.bucket_s(gateway.settings.signed_url_ttl_s)
        again = (await client.get("/api/images/status", params={"taskId": pair})).json()
        assert again["signedImageUrls"] == [first, second]
        clock.advance(timedelta(seconds=2 * bucket + 1))
        renewed = (await client.get("/api/images/status", params={"taskId": pair})).json()
        assert renewed["signedImageUrls"][0] != first and renewed["signedUrlsExpireAt"] > status["signedUrlsExpireAt"]
        assert (await anyone.get(first)).status_code == 200  # still within the lifetime it was served with
        clock.advance(timedelta(seconds=ttl_s))
        expired = await anyone.get(first)
        assert expired.status_code == 403
        assert expired.json() == {"error": f"token has expired; {links.RENEW_FILE}"}
        assert (await anyone.get(renewed["signedImageUrls"][0])).status_code == 200

        # The listing's status objects carry them too.
        (listed,) = [task for task in (await client.get("/api/images/tasks")).json()["tasks"] if task["taskId"] == pair]
        assert (await anyone.get(listed["signedImageUrls"][1])).status_code == 200


async def test_a_signed_url_of_a_bucket_copy_redirects_to_it_as_the_owners_url_does(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, sessions: Any, bucket: str
) -> None:
    gateway = await start_gateway(storage_url=f"s3://{bucket}/copies", storage_redirect=True)
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as client, httpx.AsyncClient() as anyone:
        task_id = await submit(client)
        (signed,) = (await signed_status(client, gateway.url, task_id))["signedImageUrls"]
        (content,) = await upstream_bytes(sessions, task_id)
        redirect = await anyone.get(signed)
        assert redirect.status_code == 302 and redirect.headers["cache-control"] == "no-store"
        presigned = await anyone.get(redirect.headers["location"])
        assert presigned.status_code == 200 and presigned.content == content
        refused = await anyone.get(f"{own_url(gateway.url, task_id, 0)}?token={tampered(token_of(signed))}")
        assert (refused.status_code, refused.json()) == (403, NOT_FOR_THIS_FILE)


async def test_a_read_token_opens_its_own_tasks_event_stream_and_nothing_else(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator
) -> None:
    clock = SteppedClock()
    gateway = await start_gateway(clock=clock)
    await kie.set_faults(generate_s=2.0)
    async with client_of(gateway) as client, client_of(gateway) as stranger, httpx.AsyncClient() as anyone:
        task_id = await submit(client)
        granted = await read_token(client, task_id)
        response, statuses = await events(anyone, granted["eventsUrl"])  # opened while the task is running
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["access-control-allow-origin"] == "*"
        assert statuses[0]["state"] in ("pending", "processing") and statuses[-1]["state"] == "success"
        assert {status["taskId"] for status in statuses} == {task_id}
        token = granted["token"]
        assert granted["eventsUrl"] == f"{gateway.url}/api/images/tasks/{task_id}/events?token={token}"
        assert granted["expiresAt"] > clock().isoformat()
        # Only the task's owner gets one.
        refused = await stranger.post(f"/api/images/tasks/{task_id}/read-token")
        assert (refused.status_code, refused.json()) == (404, {"error": "Task not found"})
        assert (await anyone.post(f"{gateway.url}/api/images/tasks/{task_id}/read-token")).status_code == 401

        other_task = await submit(client)

        other_token = (await read_token(client, other_task))["token"]
        file_token = links.file_token(SECRET, task_id, 0, int(clock().timestamp()) + 600)
        stream = f"/api/images/tasks/{task_id}/events?token="
        for bad, error in (
            (other_token, NOT_FOR_THIS_TASK),  # another task's
            (tampered(token), NOT_FOR_THIS_TASK),
            (file_token, NOT_FOR_THIS_TASK),  # a file token is no read token
            ("", {"error": "token is malformed"}),
        ):
            answer = await anyone.get(gateway.url + stream + bad)
            assert (answer.status_code, answer.json()) == (403, error), bad
        # It opens nothing but the stream: not the status, the listing, or a file.
        base = gateway.url
        assert (
            await anyone.get(f"{base}/api/images/status", params={"taskId": task_id, "token": token})
        ).status_code == 401
        assert (await anyone.get(f"{base}/api/images/tasks", params={"token": token})).status_code == 401
        file_answer = await anyone.get(f"{own_url(base, task_id, 0)}?token={token}")
        assert (file_answer.status_code, file_answer.json()) == (403, NOT_FOR_THIS_FILE)

        clock.advance(timedelta(seconds=gateway.settings.signed_url_ttl_s))
        expired = await anyone.get(granted["eventsUrl"])
        assert expired.status_code == 403 and expired.json()["error"].startswith("token has expired")


async def test_no_token_ever_reaches_a_log(
    database_url: str, emulator: ThreadServer, kie: Emulator, make_client_key: Any, tmp_path: Path
) -> None:
    port, log_file = free_port(), tmp_path / "gateway.log"
    env = gateway_env(
        database_url,
        emulator.url,
        port,
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        ACCESS_LOG="1",
        STORAGE_DIR=str(tmp_path / "files"),
        FETCH_ALLOWED_HOSTS="127.0.0.1",
    )
    server = ProcessServer(env, port, log_file=log_file)
    key = await make_client_key("logged")
    await kie.set_faults(generate_s=0.2)
    try:
        await asyncio.to_thread(server.start)
        async with (
            httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key.key}"}) as client,
            httpx.AsyncClient() as anyone,
        ):
            task_id = await submit(client)
            (signed,) = (await signed_status(client, server.url, task_id))["signedImageUrls"]
            assert (await anyone.get(signed)).status_code == 200
            assert (await anyone.get(signed.replace("files/0", "files/1"))).status_code == 403
            granted = await read_token(client, task_id)
            response, statuses = await events(anyone, granted["eventsUrl"])
            assert response.status_code == 200 and statuses
            assert (await anyone.get(granted["eventsUrl"][:-1] + "x")).status_code == 403
    finally:
        await asyncio.to_thread(server.stop)
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    routes = {line.get("route") for line in lines if line["logger"] == "imagehook.access"}
    assert {"/api/images/{task_id}/files/{n}", "/api/images/tasks/{task_id}/events"} <= routes  # the reads were logged
    for token in (token_of(signed), granted["token"]):
        signature = token.partition(".")[2]
        assert token not in text and signature not in text and signature[:16] not in text
    assert "token=" not in text


async def another_origin(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>a client's web app</title><body></body>")


SHOW_IMAGE = """url => new Promise(resolve => {
    const img = document.createElement("img");
    img.onload = () => resolve(img.naturalWidth);
    img.onerror = () => resolve(0);
    img.src = url;
    document.body.append(img);
})"""

FOLLOW_EVENTS = """url => new Promise(resolve => {
    const states = [];
    const source = new EventSource(url);
    source.addEventListener("status", event => {
        const status = JSON.parse(event.data);
        states.push(status.state);
        if (status.state === "success" || status.state === "fail") {
            source.close();  // else EventSource reconnects to a stream that has said everything
            resolve({states, taskId: status.taskId});
        }
    });
    source.onerror = () => { source.close(); resolve({states, failed: true}); };
})"""


async def test_a_browser_page_of_another_origin_shows_the_image_and_follows_the_stream(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, start_server: StartServer, browser: Browser
) -> None:
    gateway = await start_gateway()
    app_site = await start_server(ThreadServer(Starlette(routes=[Route("/", another_origin)])))
    await kie.set_faults(generate_s=1.0)
    async with client_of(gateway) as client:
        task_id, other_task = await submit(client), await submit(client)
        events_url = (await read_token(client, task_id))["eventsUrl"]
        other_events_url = (await read_token(client, other_task))["eventsUrl"]
        context = await browser.new_context()
        try:  # closed before the gateway stops: an open event stream would hold its shutdown
            page = await context.new_page()
            await page.goto(app_site.url)
            followed = await page.evaluate(FOLLOW_EVENTS, events_url)
            assert followed["taskId"] == task_id and followed["states"][-1] == "success", followed
            wrong = events_url.replace(f"/tasks/{task_id}/", f"/tasks/{other_task}/")
            assert (await page.evaluate(FOLLOW_EVENTS, wrong)) == {"states": [], "failed": True}
            assert (await page.evaluate(FOLLOW_EVENTS, other_events_url))["taskId"] == other_task

            (signed,) = (await signed_status(client, gateway.url, task_id))["signedImageUrls"]
            assert await page.evaluate(SHOW_IMAGE, signed) > 0
            assert await page.evaluate(SHOW_IMAGE, own_url(gateway.url, task_id, 0)) == 0  # no key, no image
            assert await page.evaluate(SHOW_IMAGE, signed[:-1] + ("1" if signed.endswith("0") else "0")) == 0
        finally:
            await context.close()
