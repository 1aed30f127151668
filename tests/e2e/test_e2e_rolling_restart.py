"""End to end: a rolling restart of two replicas (SIGTERM, then start again) under steady submissions,
status reads, long-polls and callbacks. In front of them a balancer like any other: it checks each
replica's /readyz every 50 ms and sends each request to the next ready one (a refused connection
goes to the other). Every request is answered, none with a 5xx and no connection cut mid-request,
and every task ends right."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.gateways import Emulator, gateway_env
from tests.support.servers import ProcessServer, free_port
from tests.support.waiting import wait_until

GRACE_S = 10.0
DELAY_S = 0.5  # SHUTDOWN_DELAY_S: ten health checks of the balancer


@dataclass
class Balancer:
    """Round robin over the replicas /readyz calls ready; a refused connection goes to the next."""

    urls: list[str]
    headers: dict[str, str]
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.turn = itertools.cycle(range(len(self.urls)))
        self.ready = set(self.urls)
        # A connection per request, as a balancer's health-checked pool would hand out: no stale keep-alive.
        limits = httpx.Limits(max_keepalive_connections=0)
        self.http = httpx.AsyncClient(headers=self.headers, limits=limits, timeout=30)

    async def check_health(self) -> None:
        while True:
            for url in self.urls:
                try:
                    ready = (await self.http.get(url + "/readyz", timeout=1)).status_code == 200
                except httpx.TransportError:
                    ready = False
                (self.ready.add if ready else self.ready.discard)(url)
            await asyncio.sleep(0.05)

    def next_url(self) -> str:
        for _ in self.urls:
            url = self.urls[next(self.turn)]
            if url in self.ready:
                return url
        return self.urls[next(self.turn)]  # none is ready: try one anyway

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        for _ in range(100):
            try:
                response = await self.http.request(method, self.next_url() + path, **kwargs)
            except httpx.ConnectError:
                await asyncio.sleep(0.02)  # not listening: nothing was sent, so the other replica gets it
                continue
            except httpx.TransportError as exc:  # sent, then cut off: what a rolling restart must never do
                self.failures.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                return None
            if response.status_code >= 500:
                self.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            self.answered += 1
            return response
        self.failures.append(f"{method} {path}: no replica listening")
        return None


@pytest.mark.timeout(180)
async def test_a_rolling_restart_loses_no_request_and_no_task(
    database_url: str, emulator, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=0.5)
    ports = [free_port(), free_port()]
    # No upstream throttle: the tasks are to finish within the test, not queue behind the create window.
    extra = {"SHUTDOWN_DELAY_S": str(DELAY_S), "SHUTDOWN_GRACE_S": str(GRACE_S), "KIE_CREATE_LIMIT": "0"}
    envs = [gateway_env(database_url, emulator.url, port, **extra) for port in ports]
    replicas = [await asyncio.to_thread(ProcessServer(env, port).start) for env, port in zip(envs, ports, strict=True)]
    balancer = Balancer([replica.url for replica in replicas], {"Authorization": f"Bearer {await make_key()}"})
    task_ids: list[str] = []
    running = True

    async def submitting(n: int) -> None:
        for i in itertools.count():
            if not running:
                return
            response = await balancer.send("POST", "/api/images/generate", json={"prompt": f"fox {n}-{i}"})
            if response is not None and response.status_code == 200:
                task_ids.append(response.json()["taskId"])
            await asyncio.sleep(0.2)

    async def reading(wait_s: int) -> None:
        while running:
            if task_ids:
                params = {"taskId": random.choice(task_ids), **({"wait": str(wait_s)} if wait_s else {})}
                await balancer.send("GET", "/api/images/status", params=params)
            await asyncio.sleep(0.01)

    health = asyncio.create_task(balancer.check_health())
    traffic = [asyncio.create_task(submitting(n)) for n in range(3)]
    traffic += [asyncio.create_task(reading(0)) for _ in range(3)]
    traffic += [asyncio.create_task(reading(20)) for _ in range(2)]  # long-polls, held across the restart
    try:
        await asyncio.sleep(1.5)
        for n, (env, port) in enumerate(zip(envs, ports, strict=True)):
            started = time.monotonic()
            await asyncio.to_thread(replicas[n].stop)  # SIGTERM, and wait for the exit
            assert replicas[n].process is not None and replicas[n].process.returncode == 0
            # Well inside the grace: the long-polls it held answered at once instead of being waited out.
            assert time.monotonic() - started < DELAY_S + 3
            replicas[n] = await asyncio.to_thread(ProcessServer(env, port).start)
            await asyncio.sleep(1.5)
        running = False
        await asyncio.wait_for(asyncio.gather(*traffic), timeout=GRACE_S + 30)

        assert balancer.failures == []
        assert len(task_ids) > 20 and balancer.answered > 100
        for task_id in task_ids:
            done = await wait_until(
                lambda task_id=task_id: balancer.send("GET", "/api/images/status", params={"taskId": task_id}),
                lambda response: response is not None and response.json()["state"] == "success",
                timeout=30,
            )
            assert done is not None and done.json()["state"] == "success", task_id
    finally:
        running = False
        for task in [*traffic, health]:
            task.cancel()
        await balancer.http.aclose()
        for replica in replicas:
            await asyncio.to_thread(replica.stop)


async def test_on_sigterm_readiness_fails_first_then_waiters_answer_and_the_process_exits(
    database_url: str, emulator, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=60)  # the task stays in flight throughout
    port = free_port()
    env = gateway_env(database_url, emulator.url, port, SHUTDOWN_DELAY_S="1", SHUTDOWN_GRACE_S=str(GRACE_S))
    replica = await asyncio.to_thread(ProcessServer(env, port).start)
    headers = {"Authorization": f"Bearer {await make_key()}"}
    try:
        async with httpx.AsyncClient(base_url=replica.url, headers=headers, timeout=30) as http:
            task_id = (await http.post("/api/images/generate", json={"prompt": "a slow fox"})).json()["taskId"]
            long_poll = asyncio.create_task(http.get("/api/images/status", params={"taskId": task_id, "wait": "25"}))
            events: list[str] = []

            async def follow() -> None:
                async with http.stream("GET", f"/api/images/tasks/{task_id}/events") as stream:
                    async for line in stream.aiter_lines():
                        events.append(line)

            stream = asyncio.create_task(follow())
            await asyncio.sleep(0.5)
            assert replica.process is not None
            started = time.monotonic()
            replica.process.terminate()
            draining = await wait_until(lambda: http.get("/readyz"), lambda r: r.status_code == 503, timeout=1)
            assert draining.json() == {"status": "draining"}
            assert not long_poll.done()  # still serving, for the balancer to notice
            answered = await asyncio.wait_for(long_poll, timeout=5)
            await asyncio.wait_for(stream, timeout=5)
            exit_code = await asyncio.to_thread(replica.process.wait, 10)
        took = time.monotonic() - started
        assert answered.status_code == 200 and answered.json()["state"] in ("pending", "processing")
        assert any(line.startswith("event: status") for line in events)
        assert exit_code == 0 and 1 <= took < 1 + 3
    finally:
        await asyncio.to_thread(replica.stop)
