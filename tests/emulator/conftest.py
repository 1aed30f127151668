"""The emulator tier: the Kie/kvid emulator in process, and a real HTTP receiver for its callbacks.
Nothing here touches a database."""

import asyncio

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.emulator import create_emulator
from tests.support.emulated import API_KEY, HMAC_KEY, KVID_KEY
from tests.support.waiting import wait_until


class Receiver:
    """Collects callbacks POSTed to it; answers with `status`."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.url = ""

    async def endpoint(self, request: Request) -> JSONResponse:
        self.received.append({"headers": request.headers, "body": await request.json()})
        return JSONResponse({"code": 200, "msg": "success"}, status_code=self.status)


@pytest.fixture
async def receiver():
    """A real HTTP server, so callbacks go through the emulator's actual httpx client."""
    receiver = Receiver()
    app = Starlette(routes=[Route("/callback", receiver.endpoint, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    assert await wait_until(lambda: server.started)
    receiver.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/callback"
    yield receiver
    server.should_exit = True
    await serving


@pytest.fixture
async def emulator():
    app = create_emulator(api_key=API_KEY, hmac_key=HMAC_KEY, kvid_api_key=KVID_KEY)
    # ASGITransport does not run the lifespan, and the lifespan owns the callback client.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator.test") as client:
            yield app.state.emulator, client
