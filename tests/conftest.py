"""Shared fixtures: one migrated database per run (SQLite file, or PostgreSQL when
IMAGEHOOK_TEST_DATABASE_URL names one), emptied before each test; the Kie.ai emulator
and gateways as real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.engine import create_engine, is_sqlite
from app.db.migrate import upgrade
from app.db.tables import ApiKey, Base, CallbackEvent, Task, TaskEvent
from app.emulator import create_emulator
from app.keys import hash_key, new_webhook_secret
from app.main import create_app
from app.outbox.outbound import resolve
from app.providers.kie import signature as kie_signature
from app.settings import Settings
from tests.support.servers import ThreadServer, free_port

EMULATOR_API_KEY = "test-kie-key"
KVID_API_KEY = "test-kvid-key"
HMAC_KEY = "test-webhook-hmac-key"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = os.environ.get("IMAGEHOOK_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'imagehook.db'}"
        return
    # A fresh database per run, so runs never see each other's rows.
    url = make_url(base)
    name = f"imagehook_test_{uuid.uuid4().hex[:8]}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def on_postgres(database_url: str) -> bool:
    return not is_sqlite(database_url)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture(autouse=True)
async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(delete(table))


StartServer = Callable[[ThreadServer], Awaitable[ThreadServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """start_server(server) -> the server, started; every one is stopped at teardown."""
    started: list[ThreadServer] = []

    async def start(server: ThreadServer) -> ThreadServer:
        await asyncio.to_thread(server.start)
        started.append(server)
        return server

    yield start
    for server in started:
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
def emulator() -> Iterator[ThreadServer]:
    app = create_emulator(api_key=EMULATOR_API_KEY, hmac_key=HMAC_KEY, kvid_api_key=KVID_API_KEY)
    server = ThreadServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def kie(emulator: ThreadServer) -> AsyncIterator[Emulator]:
    """The emulator, reset, with a control client for faults and call counts."""
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        await http.post("/emulator/reset")
        yield Emulator(http)


@dataclass
class Emulator:
    http: httpx.AsyncClient

    async def set_faults(self, **faults: Any) -> None:
        response = await self.http.post("/emulator/faults", json=faults)
        response.raise_for_status()

    async def calls(self) -> dict[str, Any]:
        return (await self.http.get("/emulator/calls")).json()

    async def tasks(self) -> list[dict[str, Any]]:
        return (await self.http.get("/emulator/tasks")).json()

    async def redeliver(self, upstream_id: str) -> httpx.Response:
        return await self.http.post(f"/emulator/tasks/{upstream_id}/callback")


def gateway_settings(database_url: str, kie_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url,
        public_base_url="http://127.0.0.1:0",
        kieai_api_key=EMULATOR_API_KEY,
        kieai_base_url=kie_url,
        kieai_upload_base_url=kie_url,
        kieai_webhook_hmac_key=HMAC_KEY,
        kvid_api_key=KVID_API_KEY,
        kvid_base_url=kie_url,
        poll_interval_s=0.2,
        secret=SECRET,
        sweep_interval_s=0.1,
        stale_after_s=1.0,
        task_timeout_s=60.0,
        upstream_timeout_s=5.0,
        storage_dir=tempfile.mkdtemp(prefix="imagehook-files-"),  # fresh per gateway: tests inspect it
        fetch_allowed_hosts=("127.0.0.1",),
    )
    return Settings(**(values | overrides))


def gateway_env(database_url: str, kie_url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a gateway run as its own process (`python -m app serve`)."""
    return {
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "KIEAI_API_KEY": EMULATOR_API_KEY,
        "KIEAI_BASE_URL": kie_url,
        "KIEAI_WEBHOOK_HMAC_KEY": HMAC_KEY,
        "IMAGEHOOK_SECRET": SECRET,
        "SWEEP_INTERVAL_S": "0.2",
        "STALE_AFTER_S": "1",
    } | extra


@dataclass
class Gateway:
    url: str
    settings: Settings


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(database_url: str, emulator: ThreadServer) -> AsyncIterator[StartGateway]:
    """start_gateway(**settings, resolver=...) -> a gateway under uvicorn whose callbacks come back to
    itself; `resolver` answers its outbound name lookups (the system's by default)."""
    servers: list[ThreadServer] = []

    async def start(**overrides: Any) -> Gateway:
        port = overrides.pop("port", None) or free_port()
        resolver = overrides.pop("resolver", resolve)
        settings = gateway_settings(database_url, emulator.url, public_base_url=f"http://127.0.0.1:{port}", **overrides)
        server = ThreadServer(create_app(settings, resolver=resolver), port)
        await asyncio.to_thread(server.start)
        servers.append(server)
        return Gateway(server.url, settings)

    yield start
    for server in servers:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@dataclass
class ClientKey:
    key: str
    webhook_secret: str
    id: int


@pytest.fixture
def make_client_key(sessions: async_sessionmaker[Any]) -> Callable[[str], Awaitable[ClientKey]]:
    async def make(name: str = "client") -> ClientKey:
        key, secret = "ih_" + secrets.token_urlsafe(32), new_webhook_secret()
        row = ApiKey(
            name=name, key_hash=hash_key(key), prefix=key[:10], webhook_secret=secret, created_at=datetime.now(UTC)
        )
        async with sessions.begin() as session:
            session.add(row)
        return ClientKey(key, secret, row.id)

    return make


@pytest.fixture
def make_key(make_client_key: Callable[[str], Awaitable[ClientKey]]) -> Callable[[str], Awaitable[str]]:
    async def make(name: str = "client") -> str:
        return (await make_client_key(name)).key

    return make


ClientOf = Callable[[Gateway], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_of(make_key: Callable[[str], Awaitable[str]]) -> ClientOf:
    """client_of(gateway) -> an async context manager giving a client with a fresh key."""

    @contextlib.asynccontextmanager
    async def connect(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
        key = await make_key("client")
        async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
            yield http

    return connect


@pytest.fixture
async def client(gateway: Gateway, client_of: ClientOf) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client of the default gateway."""
    async with client_of(gateway) as http:
        yield http


async def wait_for_state(
    http: httpx.AsyncClient, task_id: str, states: set[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Read status (from imagehook's own database) until the task is in one of `states`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await http.get("/api/images/status", params={"taskId": task_id})).json()
        if body.get("state") in states or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def count_rows(sessions: async_sessionmaker[Any], model: type[Base]) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def load_task(sessions: async_sessionmaker[Any], task_id: str) -> Task:
    async with sessions() as session:
        task = await session.get(Task, task_id)
    assert task is not None
    return task


async def callback_verdicts(sessions: async_sessionmaker[Any], task_id: str) -> list[str]:
    async with sessions() as session:
        stmt = select(CallbackEvent.verdict).where(CallbackEvent.task_id == task_id).order_by(CallbackEvent.id)
        return list((await session.execute(stmt)).scalars())


async def task_events(sessions: async_sessionmaker[Any], task_id: str) -> list[tuple[str, str, str]]:
    async with sessions() as session:
        stmt = select(TaskEvent.source, TaskEvent.to_state, TaskEvent.outcome).where(TaskEvent.task_id == task_id)
        return [tuple(row) for row in await session.execute(stmt.order_by(TaskEvent.id))]


async def wait_until(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


def market_callback(upstream_id: str, state: str, **data: Any) -> dict[str, Any]:
    """A callback body in Kie's market format (costTime in seconds)."""
    body = {"taskId": upstream_id, "model": "nano-banana-pro", "state": state, "param": "{}", "costTime": 3}
    if state == "success":
        body["resultJson"] = json.dumps({"resultUrls": ["https://example.com/a.png"]})
    body |= data
    return {"code": 200 if state == "success" else 501, "msg": "Playground task", "data": body}


async def post_signed(
    url: str, body: dict[str, Any], *, key: str = HMAC_KEY, timestamp: int | None = None
) -> httpx.Response:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = kie_signature.sign(key, body["data"]["taskId"], ts)
    headers = {kie_signature.TIMESTAMP_HEADER: ts, kie_signature.SIGNATURE_HEADER: signature}
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers=headers)
