"""End to end: no client can hurt another - not through the shared status-read queries, the
shared upstream create window, or a webhook receiver that answers oddly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.db.tables import Task, UpstreamSend, WebhookAttempt, WebhookDelivery
from tests.e2e.test_e2e_flow import submit
from tests.e2e.test_hostile_input import BODY_CASES, READ_CASES
from tests.support.database import count_rows, load_task
from tests.support.gateways import ClientOf, Emulator, StartGateway, StartServer, wait_for_state
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_until


async def test_a_clients_bad_reads_never_fail_anothers_first_reads(gateway, client_of: ClientOf, kie: Emulator) -> None:
    await kie.set_faults(generate_s=60)
    async with client_of(gateway) as victim, client_of(gateway) as attacker:
        task_ids = [await submit(victim) for _ in range(20)]
        other = httpx.AsyncClient(
            base_url=gateway.url
        )  # a fresh process cache would be the same: these are first reads
        bad = [attacker.get(path) for path, _, _ in READ_CASES for _ in range(3)]
        good = [victim.get("/api/images/status", params={"taskId": task_id}) for task_id in task_ids * 5]
        answers = await asyncio.gather(*bad, *good)
        await other.aclose()
    assert all(answer.status_code < 500 for answer in answers)
    assert [answer.status_code for answer in answers[len(bad) :]] == [200] * len(good)


async def test_one_keys_broken_tasks_never_hold_up_another_keys(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, sessions, make_client_key
) -> None:
    """The create window is shared by every key: a task that can never be sent fails at once,
    taking no place in it, and malformed submissions never reach it."""
    gateway = await start_gateway(kie_create_limit=2, kie_create_window_s=30)
    await kie.set_faults(generate_s=0.2)
    attacker_key = await make_client_key("attacker")
    legacy = await store_unsendable_task(sessions, attacker_key.id)
    stop = asyncio.Event()
    async with (
        client_of(gateway) as victim,
        httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {attacker_key.key}"}) as attacker,
    ):
        flood = asyncio.create_task(send_worst_inputs(attacker, stop))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        task_ids = [await submit(victim), await submit(victim)]
        sent_within = time.monotonic() - started
        statuses = [await wait_for_state(victim, task_id, {"success", "fail"}) for task_id in task_ids]
        stop.set()
        answers = await flood
    assert [status["state"] for status in statuses] == ["success", "success"]
    assert sent_within < 5  # created upstream during the requests themselves, not queued behind anything
    assert all(answer < 500 for answer in answers) and len(answers) > 20
    failed = await wait_until(lambda: load_task(sessions, legacy), lambda task: task.state == "fail")
    assert (failed.state, failed.fail_msg) == ("fail", "Request input.prompt contains a NUL character (\\u0000)")
    assert (await kie.calls())["createTask"] == 2 and await count_rows(sessions, UpstreamSend) == 2


async def store_unsendable_task(sessions, api_key_id: int) -> str:
    """A task stored before submissions were checked for text that cannot be stored or sent."""
    now = datetime.now(UTC)
    task = Task(
        id="ih_legacy_unsendable",
        api_key_id=api_key_id,
        provider="kie",
        model="nano-banana-pro",
        request={"model": "nano-banana-pro", "input": {"prompt": "a\u0000b"}},
        state="pending",
        image_urls=[],
        stored_images=[],
        credit_reserve=0,
        submit_attempts=0,
        check_attempts=0,
        next_check_at=now,
        created_at=now,
        updated_at=now,
    )
    async with sessions.begin() as session:
        session.add(task)
    return task.id


async def send_worst_inputs(http: httpx.AsyncClient, stop: asyncio.Event) -> list[int]:
    answers = []
    while not stop.is_set():
        for _, request_args, _ in BODY_CASES:
            answers.append((await http.post("/api/images/generate", **request_args)).status_code)
        for path, _, _ in READ_CASES[:10]:
            answers.append((await http.get(path)).status_code)
    return answers


# --- webhook receivers


class OddReceiver:
    """Answers every webhook with the same odd body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body, self.count = status, body, 0
        self.server = ThreadServer(Starlette(routes=[Route("/hook", self.handle, methods=["POST"])]))
        self.url = self.server.url + "/hook"

    async def handle(self, request: Request) -> Response:
        self.count += 1
        return Response(self.body, status_code=self.status, media_type="text/plain; charset=utf-8")


async def test_any_receiver_answer_is_recorded_and_the_delivery_settles(
    start_gateway: StartGateway, start_server: StartServer, client_of: ClientOf, kie: Emulator, sessions
) -> None:
    gateway = await start_gateway(webhook_allow_private=True, webhook_retry_base_s=30)
    await kie.set_faults(generate_s=0.1)
    receivers = [OddReceiver(200, b"ok\x00thanks"), OddReceiver(200, b"\xff\xfe\x00" * 2000), OddReceiver(503, b"\x00")]
    for receiver in receivers:
        await start_server(receiver.server)
    async with client_of(gateway) as client:
        task_ids = [await submit(client, webhookUrl=receiver.url) for receiver in receivers]
        rows = await wait_until(lambda: attempts(sessions), lambda found: len(found) == 3, timeout=15)
        await asyncio.sleep(1)  # time for a wrongly repeated delivery to show
    by_task = {delivery.task_id: (delivery, attempt) for delivery, attempt in rows}
    ok, binary, busy = (by_task[task_id] for task_id in task_ids)
    assert ok[0].state == "delivered" and ok[1].response_body == "ok\ufffdthanks"
    assert binary[0].state == "delivered" and len(binary[1].response_body) == 2048
    assert busy[0].state == "pending" and busy[0].next_attempt_at is not None and busy[1].status_code == 503
    assert [receiver.count for receiver in receivers] == [1, 1, 1]


async def attempts(sessions) -> list[tuple[WebhookDelivery, WebhookAttempt]]:
    async with sessions() as session:
        stmt = select(WebhookDelivery, WebhookAttempt).join(WebhookAttempt)
        return [tuple(row) for row in await session.execute(stmt)]


async def test_a_delivery_past_its_give_up_time_is_never_sent(
    start_gateway: StartGateway, start_server: StartServer, client_of: ClientOf, kie: Emulator, sessions
) -> None:
    receiver = OddReceiver(500, b"no")
    await start_server(receiver.server)
    gateway = await start_gateway(webhook_allow_private=True, webhook_retry_base_s=0.1)
    await kie.set_faults(generate_s=0.1)
    async with client_of(gateway) as client:
        task_id = await submit(client, webhookUrl=receiver.url)
        await wait_until(lambda: attempts(sessions), lambda found: len(found) >= 1)
        # As if a lease had run out after the last attempt the retry window allowed.
        past = datetime.now(UTC) - timedelta(seconds=1)
        async with sessions.begin() as session:
            stmt = update(WebhookDelivery).where(WebhookDelivery.task_id == task_id)
            await session.execute(stmt.values(give_up_at=past, next_attempt_at=past, state="pending"))
        sent = receiver.count
        delivery = await wait_until(lambda: delivery_of(sessions, task_id), lambda d: d.state == "failed")
    assert (delivery.state, delivery.last_error, delivery.next_attempt_at) == ("failed", "retry window ended", None)
    assert receiver.count == sent


async def delivery_of(sessions, task_id: str) -> WebhookDelivery:
    async with sessions() as session:
        return (await session.execute(select(WebhookDelivery).where(WebhookDelivery.task_id == task_id))).scalar_one()


class EndlessReceiver:
    """Answers 200 at once, then a body that never ends: a trickle, or a flood."""

    def __init__(self, chunk: bytes, pause_s: float) -> None:
        self.chunk, self.pause_s, self.sent = chunk, pause_s, 0
        self.server = ThreadServer(Starlette(routes=[Route("/hook", self.handle, methods=["POST"])]))
        self.url = self.server.url + "/hook"

    async def handle(self, request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            while True:
                self.sent += len(self.chunk)
                yield self.chunk
                await asyncio.sleep(self.pause_s)

        return StreamingResponse(body(), media_type="text/plain")


async def test_a_receiver_that_never_finishes_its_answer_cannot_hold_a_delivery(
    start_gateway: StartGateway, start_server: StartServer, client_of: ClientOf, kie: Emulator, sessions
) -> None:
    gateway = await start_gateway(webhook_allow_private=True, webhook_timeout_s=1)
    await kie.set_faults(generate_s=0.1)
    trickle, flood = EndlessReceiver(b"x" * 3000, 5), EndlessReceiver(b"y" * 65536, 0)
    for receiver in (trickle, flood):
        await start_server(receiver.server)
    async with client_of(gateway) as client:
        task_ids = [await submit(client, webhookUrl=receiver.url) for receiver in (trickle, flood)]
        rows = await wait_until(lambda: attempts(sessions), lambda found: len(found) == 2, timeout=15)
    by_task = {delivery.task_id: (delivery, attempt) for delivery, attempt in rows}
    (trickled, trickled_attempt), (flooded, flooded_attempt) = (by_task[task_id] for task_id in task_ids)
    # The status came at once, so each was delivered; the answer kept is its start only.
    assert trickled.state == "delivered" and trickled_attempt.response_body.endswith("x [answer cut short]")
    assert len(trickled_attempt.response_body) == 2048
    assert trickled_attempt.duration_ms < 5000
    assert flooded.state == "delivered" and flooded_attempt.response_body == "y" * 2048
    assert flood.sent < 10 * 1024 * 1024  # read no further than needed, not to the end of a flood
