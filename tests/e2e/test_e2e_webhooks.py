"""Outgoing webhooks to clients, end to end: the gateway, the Kie.ai emulator and a scripted
receiver run as real uvicorn servers on loopback; signatures are checked with the reference
Standard Webhooks library."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.db.tables import ApiKey, Task, WebhookAttempt, WebhookDelivery
from app.deps import open_deps
from app.keys import new_webhook_secret, rotate_webhook_secret
from tests.support.database import ClientKey, count_rows
from tests.support.gateways import (
    Emulator,
    Gateway,
    StartGateway,
    StartServer,
    gateway_env,
    wait_for_state,
    without_browser_links,
)
from tests.support.servers import ProcessServer, ThreadServer, free_port
from tests.support.waiting import wait_until

# --- the receiver -------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes  # exactly as sent: what the signature covers
    at: float  # time.monotonic() on arrival

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A client's webhook endpoint: records every request and answers from a script
    of (status, headers), then 200 once the script runs out."""

    def __init__(self, port: int | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._script: list[tuple[int, dict[str, str]]] = []
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.server = ThreadServer(app, port)
        self.url = f"{self.server.url}/hook"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self._requests.append(Received(dict(request.headers), body, time.monotonic()))
            status, headers = self._script.pop(0) if self._script else (200, {})
        return Response(f"answered {status}", status_code=status, headers=headers)

    def answer(self, *responses: int | tuple[int, dict[str, str]]) -> None:
        with self._lock:
            self._script.extend(r if isinstance(r, tuple) else (r, {}) for r in responses)

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async def probe() -> list[Received]:
            return self.requests

        received = await wait_until(probe, lambda r: len(r) >= count, timeout=timeout)
        assert len(received) >= count, f"receiver got {len(received)} of {count} webhooks"
        return received


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
def start_receiver(start_server: StartServer) -> StartReceiver:
    """start_receiver(port=None, *scripted responses) -> a running Receiver, stopped at teardown."""

    async def start(*responses: int | tuple[int, dict[str, str]], port: int | None = None) -> Receiver:
        receiver = Receiver(port)
        receiver.answer(*responses)
        await start_server(receiver.server)
        return receiver

    return start


@pytest.fixture
async def receiver(start_receiver: StartReceiver) -> Receiver:
    return await start_receiver()


# --- gateway and client helpers -------------------------------------------------------------


@pytest.fixture
async def webhook_gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway that may call the loopback receiver, retrying quickly."""
    return await start_gateway(webhook_allow_private=True, webhook_retry_base_s=0.2)


@dataclass
class Account:
    http: httpx.AsyncClient
    key: ClientKey


OpenAccount = Callable[[Gateway], contextlib.AbstractAsyncContextManager[Account]]


@pytest.fixture
def open_account(make_client_key: Callable[[str], Awaitable[ClientKey]]) -> OpenAccount:
    @contextlib.asynccontextmanager
    async def connect(gateway: Gateway) -> AsyncIterator[Account]:
        key = await make_client_key("webhook client")
        async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key.key}"}) as http:
            yield Account(http, key)

    return connect


@pytest.fixture
async def account(webhook_gateway: Gateway, open_account: OpenAccount) -> AsyncIterator[Account]:
    async with open_account(webhook_gateway) as opened:
        yield opened


async def submit(http: httpx.AsyncClient, webhook_url: Any, **body: Any) -> str:
    response = await http.post("/api/images/generate", json={"prompt": "a red fox", "webhookUrl": webhook_url, **body})
    assert response.status_code == 200, response.text
    return response.json()["taskId"]


async def deliveries_of(http: httpx.AsyncClient, task_id: str | None = None) -> list[dict[str, Any]]:
    response = await http.get("/api/webhooks/deliveries", params={"taskId": task_id} if task_id else None)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def wait_for_delivery(
    http: httpx.AsyncClient, task_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The task's one delivery, as the deliveries API shows it, once `done` holds."""
    found = await wait_until(lambda: deliveries_of(http, task_id), lambda d: len(d) == 1 and done(d[0]), timeout)
    assert len(found) == 1, found
    assert done(found[0]), found[0]
    return found[0]


def settled(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda delivery: delivery["state"] == state


def statuses(delivery: dict[str, Any]) -> list[int | None]:
    return [attempt["statusCode"] for attempt in delivery["attemptLog"]]


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split(" ")


# --- 1. what arrives -------------------------------------------------------------------------


async def test_success_webhook_arrives_once_signed_with_the_task_status(
    account: Account, receiver: Receiver, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.2)
    task_id = await submit(account.http, receiver.url)
    status = await wait_for_state(account.http, task_id, {"success"})
    delivery = await wait_for_delivery(account.http, task_id, settled("delivered"))

    (webhook,) = await receiver.wait_for(1)
    payload = Webhook(account.key.webhook_secret).verify(webhook.body, webhook.headers)
    assert payload["type"] == "task.succeeded"
    assert payload["taskId"] == task_id and payload["state"] == "success"
    assert payload["imageUrl"] and payload["imageUrl"] == payload["imageUrls"][0]
    # The payload is the status a client reads, plus the event type, less the signed links for
    # browsers (a payload may be retried long after they expired). Where its images are served
    # depends on whether the background copy had finished when it was sent.
    images = ("imageUrl", "imageUrls", "expiresAt", "updatedAt")
    assert {k: v for k, v in payload.items() if k not in images} == {
        "type": "task.succeeded",
        **{k: v for k, v in without_browser_links(status).items() if k not in images},
    }
    copied = f"{str(account.http.base_url).rstrip('/')}/api/images/{task_id}/files/0"
    if payload["imageUrl"] == copied:
        assert payload["expiresAt"] is None
    else:  # sent before the copy existed: the provider's URL, which expires
        assert payload["imageUrl"].startswith(str(kie.http.base_url).rstrip("/") + "/files/")
        assert payload["expiresAt"] is not None
    assert webhook.headers["content-type"] == "application/json"
    assert abs(int(webhook.headers["webhook-timestamp"]) - time.time()) < 60
    assert webhook.webhook_id == delivery["webhookId"]

    assert delivery["eventType"] == "task.succeeded" and delivery["url"] == receiver.url
    assert delivery["attempts"] == 1 and statuses(delivery) == [200] and delivery["deliveredAt"]
    assert delivery["nextAttemptAt"] is None

    # The signature covers the body and is made with this key's secret only.
    with pytest.raises(WebhookVerificationError):
        Webhook(account.key.webhook_secret).verify(webhook.body.replace(b"success", b"fail"), webhook.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(webhook.body, webhook.headers)

    await asyncio.sleep(0.5)  # several sweeper rounds: a delivered webhook is never sent again
    assert len(receiver.requests) == 1


async def test_failed_task_sends_task_failed_with_its_message(
    account: Account, receiver: Receiver, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.1, fail_rate=1.0, fail_msg="Content policy violation")
    task_id = await submit(account.http, receiver.url)
    await wait_for_state(account.http, task_id, {"fail"})

    (webhook,) = await receiver.wait_for(1)
    payload = Webhook(account.key.webhook_secret).verify(webhook.body, webhook.headers)
    assert payload["type"] == "task.failed"
    assert payload["taskId"] == task_id and payload["state"] == "fail"
    assert payload["failMsg"] == "Content policy violation"
    assert payload["imageUrl"] is None and payload["imageUrls"] == []
    delivery = await wait_for_delivery(account.http, task_id, settled("delivered"))
    assert delivery["eventType"] == "task.failed"


async def test_task_without_webhook_url_sends_nothing(
    account: Account, receiver: Receiver, kie: Emulator, sessions
) -> None:
    await kie.set_faults(generate_s=0.1)
    response = await account.http.post("/api/images/generate", json={"prompt": "a red fox"})
    task_id = response.json()["taskId"]
    await wait_for_state(account.http, task_id, {"success"})
    await asyncio.sleep(0.3)
    assert await deliveries_of(account.http) == []
    assert await count_rows(sessions, WebhookDelivery) == 0
    assert receiver.requests == []


# --- 2-4. retries ------------------------------------------------------------------------------


async def test_failing_receiver_gets_retries_with_the_same_webhook_id_until_it_accepts(
    account: Account, receiver: Receiver, kie: Emulator
) -> None:
    receiver.answer(500, 500, 200)
    await kie.set_faults(generate_s=0.1)
    task_id = await submit(account.http, receiver.url)

    first, second, third = await receiver.wait_for(3)
    assert first.webhook_id == second.webhook_id == third.webhook_id
    assert first.at < second.at < third.at
    assert first.body == second.body == third.body
    for webhook in (first, second, third):
        Webhook(account.key.webhook_secret).verify(webhook.body, webhook.headers)

    delivery = await wait_for_delivery(account.http, task_id, settled("delivered"))
    assert delivery["webhookId"] == first.webhook_id
    assert delivery["attempts"] == 3
    assert statuses(delivery) == [500, 500, 200]
    assert delivery["attemptLog"][0]["responseBody"] == "answered 500"
    assert delivery["lastStatus"] == 200 and delivery["deliveredAt"]
    times = [attempt["at"] for attempt in delivery["attemptLog"]]
    assert times == sorted(times)
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 3


async def test_retry_after_from_the_receiver_is_honoured(
    start_gateway: StartGateway, open_account: OpenAccount, receiver: Receiver, kie: Emulator
) -> None:
    # Backoff alone would retry after 25-50 ms; the receiver asks for 2 s.
    gateway = await start_gateway(webhook_allow_private=True, webhook_retry_base_s=0.05)
    receiver.answer((429, {"Retry-After": "2"}))
    await kie.set_faults(generate_s=0.1)
    async with open_account(gateway) as account:
        task_id = await submit(account.http, receiver.url)
        first, second = await receiver.wait_for(2, timeout=15)
        assert second.webhook_id == first.webhook_id
        assert 2.0 <= second.at - first.at < 5.0
        delivery = await wait_for_delivery(account.http, task_id, settled("delivered"))
    assert statuses(delivery) == [429, 200]


async def test_410_gone_stops_retries_until_the_client_replays_the_delivery(
    account: Account, receiver: Receiver, kie: Emulator
) -> None:
    receiver.answer(410)
    await kie.set_faults(generate_s=0.1)
    task_id = await submit(account.http, receiver.url)
    (gone,) = await receiver.wait_for(1)
    delivery = await wait_for_delivery(account.http, task_id, settled("gone"))
    assert delivery["attempts"] == 1 and statuses(delivery) == [410]
    assert delivery["nextAttemptAt"] is None and delivery["deliveredAt"] is None

    # Retries would come within a second (base 0.2 s); none comes.
    await asyncio.sleep(2.0)
    assert len(receiver.requests) == 1
    assert (await deliveries_of(account.http, task_id))[0]["attempts"] == 1

    response = await account.http.post(f"/api/webhooks/deliveries/{delivery['id']}/retry")
    assert response.status_code == 202, response.text
    assert response.json() == {"id": delivery["id"], "state": "pending"}
    _, replayed = await receiver.wait_for(2)
    assert replayed.webhook_id == gone.webhook_id
    assert replayed.body == gone.body
    Webhook(account.key.webhook_secret).verify(replayed.body, replayed.headers)
    delivery = await wait_for_delivery(account.http, task_id, settled("delivered"))
    assert delivery["attempts"] == 2 and statuses(delivery) == [410, 200]


async def test_webhook_url_that_cannot_be_sent_fails_without_holding_up_others(
    account: Account, receiver: Receiver, kie: Emulator
) -> None:
    # Accepted (private destinations allowed, so no DNS check), but no HTTP client can send it.
    await kie.set_faults(generate_s=0.1)
    broken_task = await submit(account.http, "http://xn--/hook")
    good_task = await submit(account.http, receiver.url)
    broken = await wait_for_delivery(account.http, broken_task, settled("failed"))
    assert broken["attempts"] == 1 and statuses(broken) == [None]
    assert broken["lastError"] and broken["attemptLog"][0]["error"] == broken["lastError"]
    assert broken["nextAttemptAt"] is None
    await wait_for_delivery(account.http, good_task, settled("delivered"))
    (webhook,) = await receiver.wait_for(1)
    assert webhook.json()["taskId"] == good_task


# --- 5. secret rotation ------------------------------------------------------------------------


async def test_after_rotation_both_old_and_new_secret_verify(
    webhook_gateway: Gateway, account: Account, receiver: Receiver, kie: Emulator, sessions
) -> None:
    old_secret = account.key.webhook_secret
    async with open_deps(webhook_gateway.settings) as deps:
        new_secret = await rotate_webhook_secret(deps, account.key.id)
    assert new_secret != old_secret and new_secret.startswith("whsec_")

    await kie.set_faults(generate_s=0.1)
    task_id = await submit(account.http, receiver.url)
    (webhook,) = await receiver.wait_for(1)
    assert len(signatures(webhook)) == 2 and all(s.startswith("v1,") for s in signatures(webhook))
    for secret in (old_secret, new_secret):
        assert Webhook(secret).verify(webhook.body, webhook.headers)["taskId"] == task_id
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(webhook.body, webhook.headers)

    # Once the overlap is over, only the new secret signs.
    async with sessions.begin() as session:
        rotated_at = (await session.get(ApiKey, account.key.id)).webhook_secret_rotated_at
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == account.key.id)
            .values(webhook_secret_rotated_at=rotated_at - timedelta(days=2))
        )
    await submit(account.http, receiver.url)
    _, later = await receiver.wait_for(2)
    assert len(signatures(later)) == 1
    Webhook(new_secret).verify(later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(later.body, later.headers)


# --- 6. restart --------------------------------------------------------------------------------


async def test_pending_delivery_survives_a_killed_gateway(
    database_url: str,
    emulator: ThreadServer,
    kie: Emulator,
    make_client_key: Callable[[str], Awaitable[ClientKey]],
    start_receiver: StartReceiver,
    sessions,
) -> None:
    port, receiver_port = free_port(), free_port()
    hook_url = f"http://127.0.0.1:{receiver_port}/hook"  # nothing listens there yet
    env = gateway_env(
        database_url,
        emulator.url,
        port,
        SWEEP_INTERVAL_S="0.1",
        STALE_AFTER_S="1",
        WEBHOOK_ALLOW_PRIVATE="1",
        WEBHOOK_RETRY_BASE_S="0.3",
        WEBHOOK_TIMEOUT_S="1",
    )
    key = await make_client_key("webhook client")
    headers = {"Authorization": f"Bearer {key.key}"}
    await kie.set_faults(generate_s=0.1)

    first = await asyncio.to_thread(ProcessServer(env, port).start)
    try:
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as http:
            task_id = await submit(http, hook_url)

        async def failed_attempts() -> list[WebhookAttempt]:
            async with sessions() as session:
                stmt = (
                    select(WebhookAttempt)
                    .join(WebhookDelivery, WebhookAttempt.delivery_id == WebhookDelivery.id)
                    .where(WebhookDelivery.task_id == task_id)
                )
                return list((await session.execute(stmt)).scalars())

        attempts = await wait_until(failed_attempts, lambda a: len(a) >= 1)
        assert attempts, "no delivery attempt was recorded"
        assert all(a.status_code is None and a.error for a in attempts)
        await asyncio.to_thread(first.kill)
    finally:
        await asyncio.to_thread(first.stop)

    async with sessions() as session:
        (delivery,) = (await session.execute(select(WebhookDelivery))).scalars()
    assert delivery.state == "pending" and delivery.task_id == task_id

    receiver = await start_receiver(port=receiver_port)
    second = await asyncio.to_thread(ProcessServer(env, port).start)
    try:
        (webhook,) = await receiver.wait_for(1, timeout=20)
        assert webhook.webhook_id == delivery.webhook_id
        payload = Webhook(key.webhook_secret).verify(webhook.body, webhook.headers)
        assert payload["type"] == "task.succeeded" and payload["taskId"] == task_id
        async with httpx.AsyncClient(base_url=second.url, headers=headers) as http:
            shown = await wait_for_delivery(http, task_id, settled("delivered"))
        assert shown["webhookId"] == delivery.webhook_id
        assert statuses(shown)[-1] == 200 and all(s is None for s in statuses(shown)[:-1])
        assert shown["attempts"] == len(shown["attemptLog"]) >= 2
        assert await count_rows(sessions, WebhookDelivery) == 1
    finally:
        await asyncio.to_thread(second.stop)


# --- 7. refused URLs -----------------------------------------------------------------------------


@pytest.fixture
async def strict_account(gateway: Gateway, open_account: OpenAccount) -> AsyncIterator[Account]:
    """A client of a gateway with the default settings: private destinations refused."""
    assert not gateway.settings.webhook_allow_private
    async with open_account(gateway) as opened:
        yield opened


async def assert_refused_and_nothing_happened(
    account: Account, kie: Emulator, sessions, webhook_url: Any
) -> dict[str, Any]:
    response = await account.http.post("/api/images/generate", json={"prompt": "a red fox", "webhookUrl": webhook_url})
    assert response.status_code == 400, response.text
    calls = await kie.calls()
    assert {name: n for name, n in calls.items() if isinstance(n, int) and n} == {}
    assert await count_rows(sessions, Task) == 0
    assert await count_rows(sessions, WebhookDelivery) == 0
    return response.json()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",
    ],
)
async def test_webhook_url_reaching_a_private_address_is_refused_at_submit(
    strict_account: Account, kie: Emulator, sessions, url: str
) -> None:
    body = await assert_refused_and_nothing_happened(strict_account, kie, sessions, url)
    assert body == {"error": "webhookUrl resolves to a private, loopback or link-local address"}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "not a url",
        42,
        "",
        "/relative/hook",
        "http:///no-host",
        "http://example.com/with space",
        "http://example.com:99999/hook",
        "http://example.com:port/hook",
        "http://[::1/hook",
        "http://example.com/a\x7fb",
        "http://example.com/\x00",
        "https://" + "a" * 64 + ".example.com/hook",
        "https://example.com/" + "x" * 2048,
    ],
)
async def test_malformed_webhook_url_is_refused_at_submit(
    strict_account: Account, kie: Emulator, sessions, url: Any
) -> None:
    body = await assert_refused_and_nothing_happened(strict_account, kie, sessions, url)
    assert "webhookUrl" in body["error"]


# --- 8. privacy --------------------------------------------------------------------------------


async def test_deliveries_are_visible_and_replayable_only_by_their_owner(
    webhook_gateway: Gateway, account: Account, open_account: OpenAccount, receiver: Receiver, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=0.1)
    task_id = await submit(account.http, receiver.url)
    mine = await wait_for_delivery(account.http, task_id, settled("delivered"))

    async with open_account(webhook_gateway) as other:
        assert await deliveries_of(other.http) == []
        assert await deliveries_of(other.http, task_id) == []
        response = await other.http.post(f"/api/webhooks/deliveries/{mine['id']}/retry")
        assert response.status_code == 404
        assert response.json() == {"error": "Delivery not found"}
        for missing in (str(mine["id"] + 1000), "abc"):
            response = await other.http.post(f"/api/webhooks/deliveries/{missing}/retry")
            assert response.status_code == 404

    async with httpx.AsyncClient(base_url=webhook_gateway.url) as anonymous:
        assert (await anonymous.get("/api/webhooks/deliveries")).status_code == 401
        assert (await anonymous.post(f"/api/webhooks/deliveries/{mine['id']}/retry")).status_code == 401

    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1  # the refused replay sent nothing
    assert await deliveries_of(account.http, task_id) == [mine]
