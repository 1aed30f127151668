"""End to end: an operator revokes a key with `imagehook keys revoke` while two replicas serve it.
Every replica refuses it within the key cache's TTL, while the task it already submitted finishes
and its webhook is still delivered; `keys list` then shows when the key was last used."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json

import httpx
from standardwebhooks.webhooks import Webhook

from app.reads.key_cache import KEY_CACHE_TTL_S
from tests.e2e.test_e2e_spend import run_cli
from tests.e2e.test_e2e_webhooks import Receiver, submit
from tests.support.database import MakeClientKey, load_task
from tests.support.gateways import Emulator, StartGateway, StartServer
from tests.support.waiting import wait_until


async def test_a_revoked_key_is_refused_everywhere_and_its_task_still_delivers(
    database_url: str,
    emulator,
    kie: Emulator,
    start_gateway: StartGateway,
    start_server: StartServer,
    make_client_key: MakeClientKey,
    sessions,
) -> None:
    receiver = Receiver(None)
    await start_server(receiver.server)
    replicas = [await start_gateway(webhook_allow_private=True) for _ in range(2)]
    client = await make_client_key("to be revoked")
    # The task finishes only after every replica has stopped taking its key: revoking (a CLI process)
    # and each replica's cache expiring take up to a TTL plus start-up time, so leave a wide margin.
    generate_s = 2 * KEY_CACHE_TTL_S + 10
    await kie.set_faults(generate_s=generate_s)
    key = {"Authorization": f"Bearer {client.key}"}
    async with contextlib.AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=replica.url, headers=key))
            for replica in replicas
        ]
        task_id = await submit(one, receiver.url)
        assert (await two.get("/api/images/status", params={"taskId": task_id})).status_code == 200
        revoked = await asyncio.to_thread(run_cli, database_url, emulator.url, "keys", "revoke", str(client.id))
        assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
        for http in (one, two):
            refused = await wait_until(
                functools.partial(http.get, "/api/images/status", params={"taskId": task_id}),
                lambda response: response.status_code == 401,
                timeout=KEY_CACHE_TTL_S + 5,
            )
            assert refused.json() == {"error": "Missing or invalid API key"}
        assert (await two.post("/api/images/generate", json={"prompt": "one more"})).status_code == 401
    assert (await load_task(sessions, task_id)).state in ("pending", "processing")  # refused mid-task

    (webhook,) = await receiver.wait_for(1, timeout=generate_s + 20)
    payload = Webhook(client.webhook_secret).verify(webhook.body, webhook.headers)
    assert payload["taskId"] == task_id and payload["state"] == "success"

    listed = await asyncio.to_thread(run_cli, database_url, emulator.url, "keys", "list", "--json")
    (summary,) = [key for key in json.loads(listed.stdout) if key["id"] == client.id]
    assert summary["status"] == "revoked" and summary["revoked_at"] is not None
    assert client.key not in listed.stdout


async def test_keys_commands_refuse_what_they_cannot_do(database_url: str, emulator) -> None:
    unknown = await asyncio.to_thread(run_cli, database_url, emulator.url, "keys", "revoke", "4040")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "imagehook: No API key #4040"
    bad = await asyncio.to_thread(run_cli, database_url, emulator.url, "keys", "expire", "1", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration such as 30d" in bad.stderr
