"""The end-to-end tier: the Kie.ai emulator and gateways as real uvicorn servers on loopback, over the
run's database, emptied before each test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.deps import utc_now
from app.emulator import create_emulator
from app.main import create_app
from app.outbox.outbound import resolve
from tests.support.database import MakeKey, empty_tables, make_client_key, make_key
from tests.support.gateways import (
    EMULATOR_API_KEY,
    HMAC_KEY,
    KVID_API_KEY,
    ClientOf,
    Emulator,
    Gateway,
    StartGateway,
    StartServer,
    gateway_settings,
)
from tests.support.servers import ThreadServer, free_port

__all__ = ["empty_tables", "make_client_key", "make_key"]  # the database tier's fixtures, here too


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


@pytest.fixture
async def start_gateway(database_url: str, emulator: ThreadServer) -> AsyncIterator[StartGateway]:
    """start_gateway(**settings, resolver=..., clock=...) -> a gateway under uvicorn whose callbacks come
    back to itself; `resolver` answers its outbound name lookups (the system's by default), `clock` tells
    it the time (the real one by default)."""
    servers: list[ThreadServer] = []

    async def start(**overrides: Any) -> Gateway:
        port = overrides.pop("port", None) or free_port()
        resolver, clock = overrides.pop("resolver", resolve), overrides.pop("clock", utc_now)
        settings = gateway_settings(database_url, emulator.url, public_base_url=f"http://127.0.0.1:{port}", **overrides)
        server = ThreadServer(create_app(settings, resolver=resolver, clock=clock), port)
        await asyncio.to_thread(server.start)
        servers.append(server)
        return Gateway(server.url, settings)

    yield start
    for server in servers:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
def client_of(make_key: MakeKey) -> ClientOf:
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
