"""Calling a provider over real loopback HTTP: how each failure is classed, and that no answer,
however it trickles in, holds a call longer than its deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.errors import ProviderRejected, ProviderUnavailable
from app.providers.http import send
from tests.support.gateways import StartServer
from tests.support.servers import ThreadServer, free_port

TIMEOUT = httpx.Timeout(0.3)  # each step; the whole call gets the four steps' sum, 1.2 s


async def trickle(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        while True:
            yield b" "
            await asyncio.sleep(0.1)  # each read is well within the read timeout

    return StreamingResponse(body(), media_type="application/json")


async def silent(request: Request) -> Response:
    await asyncio.sleep(2)  # far beyond the read timeout
    return Response("{}")


@pytest.fixture
async def provider(start_server: StartServer) -> str:
    app = Starlette(routes=[Route("/trickle", trickle, methods=["POST"]), Route("/silent", silent, methods=["POST"])])
    return (await start_server(ThreadServer(app))).url


async def call(url: str, **kwargs: object) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        await send(http, "Kie.ai", "POST", url, **kwargs)


async def test_an_answer_that_trickles_in_forever_is_cut_off_at_the_deadline(provider: str) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as refused:
        await call(provider + "/trickle", json={})
    assert time.monotonic() - started < 5
    assert refused.value.message == "Kie.ai did not answer in time" and refused.value.maybe_created


async def test_a_call_sent_but_never_answered_may_have_created_the_task(provider: str) -> None:
    with pytest.raises(ProviderUnavailable) as refused:
        await call(provider + "/silent", json={})
    assert refused.value.maybe_created


async def test_a_call_that_never_connected_created_nothing() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", free_port()))
        port = closed.getsockname()[1]
    with pytest.raises(ProviderUnavailable) as refused:
        await call(f"http://127.0.0.1:{port}/create", json={})
    assert not refused.value.maybe_created


async def test_a_body_that_cannot_be_encoded_is_a_definitive_refusal(provider: str) -> None:
    with pytest.raises(ProviderRejected, match="could not be built"):
        await call(provider + "/silent", json={"prompt": "a \ud800 b"})
