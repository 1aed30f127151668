"""Result images copied to imagehook's own storage before the provider's URLs expire, end to end:
the gateway and the Kie.ai emulator (or a scripted file host) as real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.db.tables import StoredFile, Task
from app.deps import open_deps
from app.emulator.images import render
from app.outbox import copies
from app.outbox.copies import copy_due
from app.outbox.outbound import Resolver, resolve
from tests.e2e.test_e2e_flow import submit
from tests.support.database import load_task
from tests.support.gateways import Emulator, Gateway, StartGateway, gateway_env, gateway_settings, wait_for_state
from tests.support.ranges import check_ranges
from tests.support.servers import ProcessServer, ThreadServer, free_port
from tests.support.waiting import wait_until

PNG = render((1.0, 1.0), "png")
IMMUTABLE = "private, max-age=31536000, immutable"


def own_url(base_url: str, task_id: str, n: int) -> str:
    return f"{base_url}/api/images/{task_id}/files/{n}"


def files_in(root: str | Path) -> list[Path]:
    return [path for path in Path(root).rglob("*") if path.is_file()]


async def copies_of(sessions: Any, task_id: str) -> list[StoredFile]:
    async with sessions() as session:
        stmt = select(StoredFile).where(StoredFile.task_id == task_id).order_by(StoredFile.n)
        return list((await session.execute(stmt)).scalars())


async def settled_copies(sessions: Any, task_id: str, count: int, timeout: float = 15.0) -> list[StoredFile]:
    def settled(rows: list[StoredFile]) -> bool:
        return len(rows) == count and all(row.state != "pending" for row in rows)

    rows = await wait_until(lambda: copies_of(sessions, task_id), settled, timeout=timeout)
    assert settled(rows), rows
    return rows


async def status_once_copied(
    http: httpx.AsyncClient, base_url: str, task_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await http.get("/api/images/status", params={"taskId": task_id})).json()

    body = await wait_until(probe, lambda b: b["imageUrls"] and b["expiresAt"] is None, timeout=timeout)
    assert body["imageUrls"] == [own_url(base_url, task_id, n) for n in range(len(body["imageUrls"]))], body
    return body


async def upstream_bytes(sessions: Any, task_id: str) -> list[bytes]:
    async with httpx.AsyncClient() as http:
        return [(await http.get(url)).content for url in (await load_task(sessions, task_id)).image_urls]


async def test_a_result_is_copied_and_served_to_its_owner_only(
    gateway: Gateway, client: httpx.AsyncClient, client_of, kie: Emulator, emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.2, result_delay_s=1.0)  # a slow copy, to see the status before it
    task_id = await submit(client)
    before = await wait_for_state(client, task_id, {"success"})
    assert before["imageUrl"].startswith(emulator.url) and before["expiresAt"] is not None

    after = await status_once_copied(client, gateway.url, task_id)
    assert after["imageUrl"] == own_url(gateway.url, task_id, 0) and after["updatedAt"] >= before["updatedAt"]
    assert (await kie.calls())["fileDownloads"] == 1
    (row,) = await copies_of(sessions, task_id)
    (content,) = await upstream_bytes(sessions, task_id)
    assert (row.state, row.attempts, row.error, row.size) == ("stored", 1, None, len(content))

    response = await client.get(after["imageUrl"])
    assert response.status_code == 200 and response.content == content
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert response.headers["cache-control"] == IMMUTABLE

    await check_ranges(client, after["imageUrl"], content)

    for tags in (response.headers["etag"], f'"other", W/{response.headers["etag"]}', "*"):
        cached = await client.get(after["imageUrl"], headers={"If-None-Match": tags})
        assert cached.status_code == 304 and cached.content == b"", tags
        assert cached.headers["etag"] == response.headers["etag"]
    assert (await client.get(after["imageUrl"], headers={"If-None-Match": '"other"'})).status_code == 200

    async with client_of(gateway) as other:
        refused = await other.get(after["imageUrl"])
    assert (refused.status_code, refused.json()) == (404, {"error": "File not found"})
    for url in (own_url(gateway.url, task_id, 1), own_url(gateway.url, "ih_unknown", 0)):
        assert (await client.get(url)).status_code == 404
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(after["imageUrl"])).status_code == 401


async def test_every_image_of_a_multi_image_task_is_copied(
    gateway: Gateway, client: httpx.AsyncClient, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.2)
    task_id = await submit(client, model="bytedance/seedream-v4-text-to-image", numImages=2)
    status = await status_once_copied(client, gateway.url, task_id)
    assert len(status["imageUrls"]) == 2
    assert sorted((await load_task(sessions, task_id)).stored_images) == [0, 1]
    for url, content in zip(status["imageUrls"], await upstream_bytes(sessions, task_id), strict=True):
        response = await client.get(url)
        assert response.status_code == 200 and response.content == content


async def assert_not_copied(client: httpx.AsyncClient, sessions: Any, task_id: str, error: str) -> StoredFile:
    """The copy failed for good: the status keeps the provider's URL and its expiry."""
    (row,) = await settled_copies(sessions, task_id, 1)
    assert (row.state, row.error, row.next_attempt_at, row.storage_key) == ("failed", error, None, None)
    status = (await client.get("/api/images/status", params={"taskId": task_id})).json()
    assert status["imageUrl"] == (await load_task(sessions, task_id)).image_urls[0]
    assert status["expiresAt"] is not None
    assert (await client.get(f"/api/images/{task_id}/files/0")).status_code == 404
    return row


async def test_a_page_instead_of_an_image_is_not_copied(client: httpx.AsyncClient, kie: Emulator, sessions) -> None:
    await kie.set_faults(generate_s=0.2, result_content_type="text/html")
    task_id = await submit(client)
    await assert_not_copied(client, sessions, task_id, "not an image: text/html")
    assert (await kie.calls())["fileDownloads"] == 1  # never retried


async def test_an_oversized_file_is_refused_and_nothing_is_kept(
    start_gateway: StartGateway, client_of, kie: Emulator, sessions
) -> None:
    gateway = await start_gateway(storage_max_bytes=10_000)
    await kie.set_faults(generate_s=0.2, result_size_bytes=50_000)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        await assert_not_copied(client, sessions, task_id, "larger than 10000 bytes")
    assert files_in(gateway.settings.storage_dir) == []


async def test_a_host_outside_the_allowlist_is_never_fetched(
    start_gateway: StartGateway, client_of, kie: Emulator, sessions
) -> None:
    gateway = await start_gateway(fetch_allowed_hosts=("example.com",))
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as client:
        task_id = await submit(client)
        await assert_not_copied(client, sessions, task_id, "host not allowed")
    assert (await kie.calls())["fileDownloads"] == 0


@pytest.mark.timeout(120)
async def test_a_copy_cut_off_by_a_killed_gateway_is_redone(
    database_url: str, emulator, kie: Emulator, make_key, sessions, tmp_path: Path
) -> None:
    port, storage_dir = free_port(), tmp_path / "files"
    env = gateway_env(
        database_url,
        emulator.url,
        port,
        STORAGE_DIR=str(storage_dir),
        FETCH_ALLOWED_HOSTS="127.0.0.1",
        COPY_TIMEOUT_S="4",
    )
    headers = {"Authorization": f"Bearer {await make_key()}"}
    await kie.set_faults(generate_s=0.2, result_delay_s=3.0)
    first = await asyncio.to_thread(ProcessServer(env, port).start)
    try:
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as client:
            task_id = await submit(client)
        # Killed once the download has begun writing: its temp file is left behind, unlocked.
        await wait_until(lambda: asyncio.to_thread(files_in, storage_dir), bool, timeout=15)
        await asyncio.to_thread(first.kill)
    finally:
        await asyncio.to_thread(first.stop)
    (leftover,) = files_in(storage_dir)
    assert leftover.name.endswith(".part")
    (row,) = await copies_of(sessions, task_id)
    assert (row.state, row.attempts) == ("pending", 0) and row.next_attempt_at > datetime.now(UTC)  # leased
    await outlive_lease(sessions, row)

    second = await asyncio.to_thread(ProcessServer(env, port).start)
    try:
        async with httpx.AsyncClient(base_url=second.url, headers=headers) as client:
            status = await status_once_copied(client, second.url, task_id, timeout=40)
            assert (await kie.calls())["fileDownloads"] == 2
            copied = (await client.get(status["imageUrl"])).content
        (content,) = await upstream_bytes(sessions, task_id)
        assert copied == content and content.startswith(b"\x89PNG")
        assert [path.relative_to(storage_dir) for path in files_in(storage_dir)] == [Path(task_id, "0")]
        (row,) = await copies_of(sessions, task_id)
        assert (row.state, row.attempts, row.sha256) == ("stored", 1, hashlib.sha256(content).hexdigest())
    finally:
        await asyncio.to_thread(second.stop)


async def outlive_lease(sessions: Any, row: StoredFile) -> None:
    """Move the lease of a killed copier into the past, as its lease_s (copy timeout + 10 s) passing
    would: the gateway runs in its own process, so no clock of the test's can step it there."""
    async with sessions.begin() as session:
        stmt = update(StoredFile).where(StoredFile.id == row.id)
        await session.execute(stmt.values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))


# --- the copier against a scripted file host ------------------------------------------------------

# status, headers, body: chunks sent chunked, and pauses (seconds) between them
Answer = tuple[int, dict[str, str], list[bytes | float]]


@pytest.fixture
async def file_host() -> AsyncIterator[tuple[str, dict[str, list[Answer]]]]:
    """(base URL, script): each path answers its script's entries in turn, the last one for good."""
    script: dict[str, list[Answer]] = {}

    async def serve(request: Request) -> Response:
        answers = script[request.path_params["name"]]
        status, headers, chunks = answers.pop(0) if len(answers) > 1 else answers[0]

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                if isinstance(chunk, float):
                    await asyncio.sleep(chunk)
                else:
                    yield chunk

        return StreamingResponse(body(), status_code=status, headers=headers)

    server = await asyncio.to_thread(ThreadServer(Starlette(routes=[Route("/{name}", serve)])).start)
    yield server.url, script
    await asyncio.to_thread(server.stop)


def image(*chunks: bytes | float, content_type: str = "image/png") -> Answer:
    return 200, {"content-type": content_type}, list(chunks)


async def copy_once(
    database_url: str,
    sessions: Any,
    url: str,
    *,
    age: timedelta = timedelta(0),
    resolver: Resolver = resolve,
    **settings: Any,
):
    """Run one copier batch over a single new row for `url`; the row afterwards and the settings used."""
    settings = gateway_settings(database_url, "http://127.0.0.1:9", **settings)
    now, task_id = datetime.now(UTC), f"ih_{secrets.token_hex(6)}"
    row = StoredFile(task_id=task_id, n=0, source_url=url, state="pending", next_attempt_at=now, created_at=now - age)
    async with sessions.begin() as session:
        session.add(row)
    async with open_deps(settings, resolver=resolver) as deps:
        assert sum((await copy_due(deps)).values()) == 1
    (row,) = await copies_of(sessions, task_id)
    return row, settings


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        pytest.param([image(PNG[:5], PNG[5:], b"\0" * 20_000)], "larger than 10000 bytes", id="streamed-too-large"),
        pytest.param(
            [image(b"<html>", b" hi</html>")], "not an image: the bytes are not PNG, JPEG, WebP or GIF", id="bytes"
        ),
        pytest.param([image(b"GIF8")], "not an image: the bytes are not PNG, JPEG, WebP or GIF", id="short"),
        pytest.param([(404, {}, [b"gone"])], "HTTP 404", id="404"),
        pytest.param([(302, {"location": "http://example.com/a.png"}, [])], "host not allowed", id="redirect-away"),
    ],
)
async def test_permanent_failures_keep_nothing(database_url, sessions, file_host, answers, error) -> None:
    url, script = file_host
    script["a.png"] = answers
    row, settings = await copy_once(database_url, sessions, f"{url}/a.png", storage_max_bytes=10_000)
    assert (row.state, row.error, row.attempts) == ("failed", error, 1)
    assert files_in(settings.storage_dir) == []


async def test_redirects_within_the_allowlist_are_followed(database_url, sessions, file_host) -> None:
    url, script = file_host
    script["a.png"] = [(302, {"location": f"{url}/b.gif"}, [])]
    script["b.gif"] = [image(b"GIF89a", b"rest", content_type="image/gif; charset=binary")]
    row, settings = await copy_once(database_url, sessions, f"{url}/a.png")
    assert (row.state, row.content_type, row.size) == ("stored", "image/gif", 10)
    assert (Path(settings.storage_dir) / row.task_id / "0").read_bytes() == b"GIF89arest"


@pytest.mark.parametrize(
    ("answer", "at_least_s", "error"),
    [
        pytest.param((503, {}, [b"busy"]), 1.0, "HTTP 503", id="5xx"),
        pytest.param((429, {"retry-after": "120"}, []), 120.0, "HTTP 429", id="retry-after"),
        pytest.param(image(PNG[:100], 2.0, PNG[100:]), 1.0, "timed out after 0.5 s", id="timeout"),
    ],
)
async def test_transient_failures_are_retried_until_the_give_up_time(
    database_url, sessions, file_host, answer, at_least_s, error
) -> None:
    url, script = file_host
    script["a.png"] = [answer, image(PNG)]
    started = datetime.now(UTC)
    row, settings = await copy_once(database_url, sessions, f"{url}/a.png", copy_timeout_s=0.5)
    assert (row.state, row.error, row.attempts) == ("pending", error, 1)
    assert row.next_attempt_at >= started + timedelta(seconds=at_least_s)
    assert files_in(settings.storage_dir) == []  # a download cut off by the timeout leaves no temp file

    async with sessions.begin() as session:
        (await session.get(StoredFile, row.id)).next_attempt_at = datetime.now(UTC)
    async with open_deps(gateway_settings(database_url, "http://127.0.0.1:9")) as deps:
        assert await copy_due(deps) == {"copy_stored": 1}

    script["late.png"] = [answer]
    late, _ = await copy_once(database_url, sessions, f"{url}/late.png", age=timedelta(hours=24), copy_timeout_s=0.5)
    assert (late.state, late.error) == ("failed", error)


async def test_concurrent_copies_of_one_task_keep_every_index(
    database_url, sessions, file_host, make_client_key
) -> None:
    """All eight images finish at about the same time; each append to stored_images must survive."""
    url, script = file_host
    script["a.png"] = [image(PNG)]
    key, now = await make_client_key("owner"), datetime.now(UTC)
    urls = [f"{url}/a.png"] * 8
    task = Task(id="ih_many", api_key_id=key.id, provider="kie", model="nano-banana-pro", request={}, state="success")
    task.image_urls, task.stored_images, task.created_at, task.updated_at = urls, [], now, now
    async with sessions.begin() as session:
        session.add(task)
        session.add_all(StoredFile(**row) for row in copies.copy_rows(task, now))
    async with open_deps(gateway_settings(database_url, "http://127.0.0.1:9")) as deps:
        assert await copy_due(deps) == {"copy_stored": 8}
    assert (await load_task(sessions, "ih_many")).stored_images == list(range(8))
