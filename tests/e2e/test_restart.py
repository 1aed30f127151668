"""A gateway killed with SIGKILL mid-task loses nothing: the sweeper finishes the task after restart."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts
from tests.support.gateways import Emulator, gateway_env
from tests.support.servers import ProcessServer, free_port
from tests.support.waiting import wait_until


async def test_task_in_flight_survives_a_killed_gateway(
    database_url: str, emulator, kie: Emulator, make_key, sessions
) -> None:
    port = free_port()
    env = gateway_env(database_url, emulator.url, port)
    first = await asyncio.to_thread(ProcessServer(env, port).start)
    headers = {"Authorization": f"Bearer {await make_key()}"}
    try:
        await kie.set_faults(generate_s=1.0)
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as client:
            task_id = await submit(client)
        await asyncio.to_thread(first.kill)

        # Kie tries to deliver while imagehook is down, and does not retry.
        tasks = await wait_until(kie.tasks, lambda t: t and t[0]["deliveries"], timeout=10)
        assert "error" in tasks[0]["deliveries"][0]
        assert await callback_verdicts(sessions, task_id) == []

        second = await asyncio.to_thread(ProcessServer(env, port).start)
        try:
            async with httpx.AsyncClient(base_url=second.url, headers=headers) as client:
                status = await wait_until(
                    lambda: client.get("/api/images/status", params={"taskId": task_id}),
                    lambda r: r.json()["state"] == "success",
                    timeout=15,
                )
                image = await client.get(status.json()["imageUrl"])
            assert status.json()["state"] == "success"
            assert image.headers["content-type"] == "image/png"
            calls = await kie.calls()
            assert calls["createTask"] == 1 and calls["recordInfo"] == 1
        finally:
            await asyncio.to_thread(second.stop)
    finally:
        await asyncio.to_thread(first.stop)
