"""The callback route over real HTTP: its shortcut past the router answers every odd request as the
router would, and its own database connection fails safe (a 503 that loses nothing) and heals."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.db.engine import asyncpg_dsn
from app.db.raw_writer import APPLICATION_NAME
from tests.e2e.test_e2e_flow import submit
from tests.support.database import callback_verdicts, load_task
from tests.support.gateways import Emulator, Gateway, StartGateway, market_callback, post_signed, wait_for_state


async def slow_task(client: httpx.AsyncClient, kie: Emulator) -> tuple[str, dict]:
    """A task submitted to Kie that Kie will not call back on its own; its upstream record."""
    await kie.set_faults(generate_s=60)
    task_id = await submit(client)
    return task_id, (await kie.tasks())[-1]


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/callbacks/kie/ih_x/token", 405, "Method Not Allowed"),
        ("PUT", "/callbacks/kie/ih_x/token", 405, "Method Not Allowed"),
        ("POST", "/callbacks/nowhere/ih_x/token", 404, "Not Found"),
        ("POST", "/callbacks/kie/ih_x/token/more", 404, "Not Found"),
        ("POST", "/callbacks/kie/ih_x/", 404, "Not Found"),
        ("POST", "/callbacks/kie/ih_x/token", 401, "Invalid callback credentials"),
        ("POST", "/callbacks/kie/ih_%00x/token", 400, "Request path contains a NUL character"),
    ],
)
async def test_odd_callback_requests_get_the_routers_answers(
    gateway: Gateway, method: str, path: str, status: int, error: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.request(method, path, content=b"{}")
    assert response.status_code == status
    assert response.json() == {"error": error}
    assert response.headers["content-type"] == "application/json"


async def test_a_callback_body_over_the_limit_is_refused_unread(
    start_gateway: StartGateway, client_of, kie: Emulator, sessions
) -> None:
    gateway = await start_gateway(max_body_bytes=1000)
    async with client_of(gateway) as client:
        task_id, upstream = await slow_task(client, kie)
        async with httpx.AsyncClient() as http:
            response = await http.post(upstream["callBackUrl"], content=b"{" + b" " * 2000 + b"}")
    assert response.status_code == 413
    assert response.json() == {"error": "Request body too large (limit 1000 bytes)"}
    assert await callback_verdicts(sessions, task_id) == []


async def test_a_callback_behind_another_processs_write_lock_is_a_503_and_applies_when_sent_again(
    start_gateway: StartGateway, client_of, kie: Emulator, database_url: str, on_postgres: bool, sessions
) -> None:
    if on_postgres:
        pytest.skip("SQLite's write lock; the PostgreSQL writer's own faults are a cut connection (below)")
    gateway = await start_gateway(database_timeout_s=0.5, sweep_interval_s=0)
    async with client_of(gateway) as client:
        task_id, upstream = await slow_task(client, kie)
        other_process = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        try:
            other_process.execute("BEGIN IMMEDIATE")
            refused = await post_signed(upstream["callBackUrl"], market_callback(upstream["taskId"], "success"))
        finally:
            other_process.rollback()
            other_process.close()
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert await callback_verdicts(sessions, task_id) == []  # nothing half-written
        again = await post_signed(upstream["callBackUrl"], market_callback(upstream["taskId"], "success"))
        assert again.status_code == 200
        assert (await wait_for_state(client, task_id, {"success"}))["state"] == "success"


async def test_callbacks_after_the_writers_connection_is_cut_get_a_503_or_a_200_that_holds(
    start_gateway: StartGateway, client_of, kie: Emulator, database_url: str, on_postgres: bool, sessions
) -> None:
    if not on_postgres:
        pytest.skip("cuts the PostgreSQL writer's own connection; SQLite's writer has none to cut")
    gateway = await start_gateway(sweep_interval_s=0)
    async with client_of(gateway) as client:
        tasks = [await slow_task(client, kie) for _ in range(3)]
        first = await post_signed(tasks[0][1]["callBackUrl"], market_callback(tasks[0][1]["taskId"], "success"))
        assert first.status_code == 200  # the writer is connected
        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            # This database's writer only: gateways of other test workers, on databases of their own, run meanwhile.
            cut = (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()"
            )
            assert len(await admin.fetch(cut, APPLICATION_NAME)) == 1
        finally:
            await admin.close()
        answers = []
        for task_id, upstream in tasks[1:]:
            for _ in range(20):  # as Kie does: a callback not answered 200 is sent again
                response = await post_signed(upstream["callBackUrl"], market_callback(upstream["taskId"], "success"))
                answers.append(response.status_code)
                if response.status_code == 200:
                    break
                assert response.status_code == 503 and response.headers["retry-after"]
                await asyncio.sleep(0.3)
            assert (await load_task(sessions, task_id)).state == "success"
    assert set(answers) <= {200, 503} and answers[-1] == 200
