"""End to end: the database goes away under a running gateway, and comes back.

On PostgreSQL the gateway reaches the database through a TCP proxy (tests/support/tcp_proxy.py) that
refuses connections or silently drops every byte. Whatever the cut, requests that need the
database get a prompt 503 with Retry-After, reads this process answered before keep their last
answer, and once the line is back everything works again without a restart. On SQLite, another
process holding the write lock makes submissions a prompt 503 while reads go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url

from app.db.tables import Task
from app.main import create_app
from app.reads.watch import LISTENER_NAME
from tests.e2e.test_e2e_flow import submit
from tests.support.gateways import Emulator, Gateway, StartGateway, gateway_settings, wait_for_state
from tests.support.servers import ThreadServer, free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

TIMEOUT_S = 1.0  # DATABASE_TIMEOUT_S of the gateways here
BOUND_S = 4 * TIMEOUT_S  # what an answer may take during an outage (without the bounds: about 29 s)
UNAVAILABLE = {"error": "Database unavailable; retry shortly"}


@pytest.fixture
async def proxy(database_url: str, on_postgres: bool) -> AsyncIterator[TcpProxy]:
    if not on_postgres:
        pytest.skip("cuts the line to PostgreSQL; SQLite has no line to cut (see the write-lock test)")
    url = make_url(database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def gateway_via_proxy(proxy: TcpProxy, database_url: str, emulator: ThreadServer) -> AsyncIterator[Gateway]:
    """A gateway whose every database connection, LISTEN included, goes through the proxy."""
    port = free_port()
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = gateway_settings(
        url, emulator.url, public_base_url=f"http://127.0.0.1:{port}", database_timeout_s=TIMEOUT_S
    )
    server = ThreadServer(create_app(settings), port)
    await asyncio.to_thread(server.start)
    yield Gateway(server.url, settings)
    await proxy.forward()  # a test that failed mid-cut must not leave the gateway unable to stop
    await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def client_with(gateway: Gateway, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
        yield http


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


def status_of(http: httpx.AsyncClient, task_id: str) -> Awaitable[httpx.Response]:
    return http.get("/api/images/status", params={"taskId": task_id})


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == UNAVAILABLE
    assert int(response.headers["retry-after"]) > 0


async def cut(proxy: TcpProxy, how: str) -> None:
    if how == "refuse":
        await proxy.refuse()
    else:
        proxy.partition()


async def listeners(sessions: Any) -> int:
    """LISTEN connections of gateways on the test database, as PostgreSQL sees them."""
    stmt = select(func.count()).select_from(text("pg_stat_activity"))
    stmt = stmt.where(text("datname = current_database() AND application_name = :name"))
    async with sessions() as session:
        return (await session.execute(stmt, {"name": LISTENER_NAME})).scalar_one()


async def read_sse(http: httpx.AsyncClient, task_id: str, events: list[dict[str, Any]]) -> None:
    """Collect the task's status events until its stream closes."""
    async with http.stream("GET", f"/api/images/tasks/{task_id}/events", timeout=None) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))


async def change_task(sessions: Any, task_id: str, **values: Any) -> None:
    """What another replica, which still reaches the database, would write (and NOTIFY)."""
    async with sessions.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(**values))


@pytest.mark.parametrize("how", ["refuse", "partition"])
async def test_a_cut_to_postgresql_answers_503_at_once_serves_known_statuses_and_heals(
    how: str, gateway_via_proxy: Gateway, proxy: TcpProxy, kie: Emulator, make_key, sessions, caplog
) -> None:
    gateway = gateway_via_proxy
    owner_key, other_key = await make_key("owner"), await make_key("other")
    async with (
        client_with(gateway, owner_key) as owner,
        client_with(gateway, other_key) as other,
        client_with(gateway, "ih_never-seen-key") as stranger,
    ):
        await kie.set_faults(generate_s=60)  # the task stays in flight throughout
        task_id = await submit(owner)
        assert (await status_of(other, task_id)).status_code == 404  # other's key is now known too
        await wait_until(lambda: listeners(sessions), lambda n: n == 1)
        events: list[dict[str, Any]] = []
        stream = asyncio.create_task(read_sse(owner, task_id, events))
        before = await status_of(owner, task_id)
        assert before.status_code == 200

        caplog.set_level(logging.WARNING)
        await cut(proxy, how)
        cut_at = time.monotonic()
        submitted, submit_s = await timed(owner.post("/api/images/generate", json={"prompt": "a red fox"}))
        ready, ready_s = await timed(owner.get("/readyz"))
        known, known_s = await timed(status_of(owner, task_id))
        not_theirs = await status_of(other, task_id)
        never_seen, never_seen_s = await timed(status_of(owner, "ih_never-read-here"))
        unknown_key, unknown_key_s = await timed(status_of(stranger, task_id))
        # Meanwhile the sweeper and the LISTEN connection keep failing; by the end of this long-poll
        # the LISTEN connection has noticed the cut in any case.
        waited, waited_s = await timed(owner.get("/api/images/status", params={"taskId": task_id, "wait": 2}))
        outage_s = time.monotonic() - cut_at
        await change_task(sessions, task_id, state="processing", cost_time_ms=4242)  # its NOTIFY is lost here
        await proxy.forward()

        assert_unavailable(submitted)
        assert ready.status_code == 503 and ready.json() == {"status": "unavailable", "database": "unreachable"}
        assert "retry-after" in ready.headers
        assert known.status_code == 200 and known.content == before.content
        assert waited.status_code == 200 and waited.content == before.content and waited_s < 2 + BOUND_S
        assert not_theirs.status_code == 404  # a stale answer goes only to the task's owner
        assert_unavailable(never_seen)
        assert_unavailable(unknown_key)  # it may be valid: not a 401
        assert max(submit_s, ready_s, known_s, never_seen_s, unknown_key_s) < BOUND_S
        sweeper_lines = [r for r in caplog.records if r.name == "app.tasks.sweeper" and r.levelno >= logging.WARNING]
        assert not [r for r in sweeper_lines if r.exc_info]  # one line a round, no tracebacks
        assert len(sweeper_lines) < 3 * outage_s / gateway.settings.sweep_interval_s  # paced, not spinning

        ready = await wait_until(lambda: owner.get("/readyz"), lambda r: r.status_code == 200, timeout=10)
        assert ready.status_code == 200
        fresh = await wait_until(lambda: status_of(owner, task_id), lambda r: r.json().get("costTime") == 4242)
        assert fresh.json()["costTime"] == 4242  # what was cached before the cut did not outlive it
        assert await wait_until(lambda: listeners(sessions), lambda n: n == 1) == 1
        # The event stream stayed open through the cut and carries on to the end.
        await change_task(sessions, task_id, state="fail", fail_msg="Stopped by an operator")
        await asyncio.wait_for(stream, timeout=10)
        assert events[0] == before.json() and events[-1]["failMsg"] == "Stopped by an operator"
        # A new task completes although its callback is lost: the sweeper is back at work.
        await kie.set_faults(generate_s=0.2, drop_callbacks=1.0)
        new_task = await submit(owner)
        assert (await wait_for_state(owner, new_task, {"success", "fail"}, timeout=15))["state"] == "success"


async def test_a_submission_behind_another_processs_sqlite_write_lock_is_a_prompt_503_and_reads_go_on(
    start_gateway: StartGateway, database_url: str, on_postgres: bool, kie: Emulator, make_key
) -> None:
    if on_postgres:
        pytest.skip("SQLite's write lock; on PostgreSQL writers lock rows, not the database")
    # No sweeper: its writes would queue behind the lock too, and this is about what a client waits.
    gateway = await start_gateway(database_timeout_s=TIMEOUT_S, sweep_interval_s=0)
    async with client_with(gateway, await make_key("writer")) as http:
        await kie.set_faults(generate_s=60)
        task_id = await submit(http)
        before = await status_of(http, task_id)
        other_process = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        try:
            other_process.execute("BEGIN IMMEDIATE")  # holds the write lock until it ends
            submitted, submit_s = await timed(http.post("/api/images/generate", json={"prompt": "a red fox"}))
            read = await status_of(http, task_id)
        finally:
            other_process.rollback()
            other_process.close()
        after = await http.post("/api/images/generate", json={"prompt": "a red fox"})
    assert_unavailable(submitted)
    assert TIMEOUT_S / 2 < submit_s < BOUND_S  # it waited for the lock, about as long as the bound says
    assert read.status_code == 200 and read.content == before.content
    assert after.status_code == 200 and after.json()["taskId"]
