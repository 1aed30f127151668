"""End to end: slow or idle connections cannot hold `python -m app serve`.

The hostile clients are raw sockets that send part of a request and then stall or trickle; the
real clients are httpx. Time is measured from just before each hostile connect, so the server's
own clock for a connection can only have started later: the lower bounds below cannot flake, and
the upper bounds leave a loaded machine plenty of room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.test_e2e_waiting import read_sse
from tests.support.gateways import Emulator, gateway_env
from tests.support.servers import ProcessServer, free_port
from tests.support.waiting import wait_until

HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 1.0, 2.0
MARGIN_S = 8.0
CAP = 20  # MAX_CONNECTIONS of the capped gateway, whose header timeout is too long to free anything in a test
PARTIAL_REQUESTS = [
    b"",  # connected, nothing sent
    b"GET /api/images/sta",  # part of the request line
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # part of the headers
]


def serve(database_url: str, emulator_url: str, **env: str) -> Iterator[ProcessServer]:
    port = free_port()
    server = ProcessServer(gateway_env(database_url, emulator_url, port, **env), port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def timed_gateway(engine, database_url: str, emulator) -> Iterator[ProcessServer]:
    yield from serve(database_url, emulator.url, HEADER_TIMEOUT_S="1", BODY_TIMEOUT_S="2", MAX_CONNECTIONS="1000")


@pytest.fixture(scope="module")
def capped_gateway(engine, database_url: str, emulator) -> Iterator[ProcessServer]:
    yield from serve(database_url, emulator.url, HEADER_TIMEOUT_S="60", MAX_CONNECTIONS=str(CAP))


@dataclass
class Hostile:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_at: float


@dataclass
class Closed:
    after_s: float  # math.inf: still open when the test stopped waiting
    data: bytes


@contextlib.asynccontextmanager
async def hostile_clients() -> AsyncIterator[list[Hostile]]:
    """A list to open raw connections into; all of them are closed on the way out."""
    opened: list[Hostile] = []
    try:
        yield opened
    finally:
        for hostile in opened:
            hostile.writer.close()


async def connect(opened: list[Hostile], server: ProcessServer, sent: bytes) -> Hostile:
    opened_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(sent)
    await writer.drain()
    opened.append(Hostile(reader, writer, opened_at))
    return opened[-1]


async def until_closed(hostile: Hostile, within_s: float) -> Closed:
    """What the server sent before it closed the connection, and when it closed it."""
    try:
        data = await asyncio.wait_for(hostile.reader.read(), within_s)
    except TimeoutError:
        return Closed(math.inf, b"")
    except ConnectionResetError:  # the server closed while a trickle was still arriving
        data = b""
    return Closed(time.monotonic() - hostile.opened_at, data)


async def trickle(hostile: Hostile, chunk: bytes, every_s: float = 0.2) -> None:
    """Keep the connection busy with a little data now and then, until the server closes it."""
    with contextlib.suppress(ConnectionError):
        for _ in range(round(MARGIN_S / every_s)):  # bounded, should the server never close
            if hostile.reader.at_eof():
                return
            await asyncio.sleep(every_s)
            hostile.writer.write(chunk)
            await hostile.writer.drain()


def error_of(response: bytes) -> tuple[bytes, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


async def generate_and_read(server: ProcessServer, key: str) -> None:
    """What a real client does: submit, then read the status; both answered promptly."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=5) as http:
        started = time.monotonic()
        created = await http.post("/api/images/generate", json={"prompt": "a red fox"})
        assert created.status_code == 200, created.text
        status = await http.get("/api/images/status", params={"taskId": created.json()["taskId"]})
        assert status.status_code == 200 and status.json()["state"] in {"pending", "processing"}
        assert time.monotonic() - started < 5


async def test_half_sent_requests_are_answered_408_and_closed_at_the_header_timeout(
    timed_gateway: ProcessServer, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=60)
    async with hostile_clients() as opened:
        flood = await asyncio.gather(*(connect(opened, timed_gateway, PARTIAL_REQUESTS[i % 3]) for i in range(300)))
        trickling = [await connect(opened, timed_gateway, b"GET /healthz HTTP/1.1\r\n") for _ in range(10)]
        trickles = [asyncio.create_task(trickle(hostile, b"X-More: 1\r\n")) for hostile in trickling]
        await generate_and_read(timed_gateway, await make_key())

        closed = await asyncio.gather(*(until_closed(h, HEADER_TIMEOUT_S + MARGIN_S) for h in flood + trickling))
        await asyncio.gather(*trickles)
    after = sorted(c.after_s for c in closed)
    assert HEADER_TIMEOUT_S * 0.9 <= after[0] and after[-1] <= HEADER_TIMEOUT_S + MARGIN_S, after
    for answer in closed[: len(flood)]:
        assert error_of(answer.data) == (
            b"HTTP/1.1 408 Request Timeout",
            {"error": "Request headers not received within 1 s"},
        )


async def test_a_stalled_or_trickled_body_is_cut_off_at_the_body_timeout(timed_gateway, make_key) -> None:
    key = await make_key()
    head = (
        f"POST /api/images/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    async with hostile_clients() as opened:
        stalled = await connect(opened, timed_gateway, head + b'{"prompt":')  # 10 of the 1000 bytes
        trickled = await connect(opened, timed_gateway, head + b'{"prompt":')
        trickling = asyncio.create_task(trickle(trickled, b" "))
        closed = await asyncio.gather(*(until_closed(h, BODY_TIMEOUT_S + MARGIN_S) for h in (stalled, trickled)))
        await trickling
    for connection in closed:
        assert BODY_TIMEOUT_S * 0.9 <= connection.after_s <= BODY_TIMEOUT_S + MARGIN_S, connection


async def test_long_polls_and_event_streams_outlive_both_timeouts(
    timed_gateway: ProcessServer, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=5)  # the submit below would have to take 3 s to leave less than 2 s
    headers = {"Authorization": f"Bearer {await make_key()}"}
    async with httpx.AsyncClient(base_url=timed_gateway.url, headers=headers, timeout=30) as http:
        task_id = (await http.post("/api/images/generate", json={"prompt": "a red fox"})).json()["taskId"]
        started = time.monotonic()
        long_poll, events = await asyncio.gather(
            http.get("/api/images/status", params={"taskId": task_id, "wait": 20}), read_sse(http, task_id)
        )
        lasted = time.monotonic() - started
    assert long_poll.status_code == 200 and long_poll.json()["state"] == "success"
    assert events[0]["state"] == "pending" and events[-1]["state"] == "success"
    assert lasted > BODY_TIMEOUT_S > HEADER_TIMEOUT_S


async def test_at_the_connection_cap_a_newcomer_evicts_the_longest_waiting_connections(
    capped_gateway: ProcessServer, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=60)  # no callback comes in to take a connection
    async with hostile_clients() as opened:
        # One after another, so the server takes them in this order.
        flood = [await connect(opened, capped_gateway, b"GET /healthz HTTP/1.1\r\n") for _ in range(3 * CAP)]
        await generate_and_read(capped_gateway, await make_key())

        evicted = await asyncio.gather(*(until_closed(h, MARGIN_S) for h in flood[: 2 * CAP]))
        newest = await asyncio.gather(*(until_closed(h, 0.5) for h in flood[-CAP // 2 :]))
    assert all(c.after_s < MARGIN_S and c.data == b"" for c in evicted), evicted
    assert all(c.after_s == math.inf for c in newest), newest  # still within their 60 s for headers


async def test_at_the_cap_with_every_connection_busy_a_newcomer_is_refused_503(
    capped_gateway: ProcessServer, kie: Emulator, make_key
) -> None:
    await kie.set_faults(generate_s=60)
    key = await make_key()
    async with httpx.AsyncClient(base_url=capped_gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
        task_id = (await http.post("/api/images/generate", json={"prompt": "a red fox"})).json()["taskId"]
    request = f"GET /api/images/tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    async with hostile_clients() as opened:
        streams = [await connect(opened, capped_gateway, request.encode()) for _ in range(CAP)]
        for stream in streams:  # each stream is being served: the server is at its cap, none waiting
            assert b"event: status" in await asyncio.wait_for(stream.reader.readuntil(b"\n\n"), MARGIN_S)
        async with httpx.AsyncClient(base_url=capped_gateway.url, timeout=5) as newcomer:
            refused = await newcomer.get("/healthz")
            assert refused.status_code == 503 and refused.json() == {"error": "Too many connections"}
            streams[0].writer.close()
            after_one_left = await wait_until(lambda: newcomer.get("/healthz"), lambda r: r.status_code == 200)
    assert after_one_left.status_code == 200


async def test_bytes_that_are_not_http_get_a_json_400(timed_gateway: ProcessServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_gateway.port)
    writer.write(b"\x16\x03\x01 not a request at all\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=MARGIN_S)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
    assert json.loads(body) == {"error": "Invalid HTTP request received."}


async def test_a_large_body_read_together_with_its_headers_is_no_header(timed_gateway: ProcessServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_gateway.port)
    body = b'{"code": 200, "msg": "' + b"a" * 200_000 + b'"}'  # read whole by the callback route
    head = b"POST /callbacks/kie/ih_AAAAAAAAAAAAAAAAAAAAAAAA/bad HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    writer.write(head + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    answer = await asyncio.wait_for(reader.read(), timeout=MARGIN_S)
    writer.close()
    head, _, reply = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), head  # the route's answer to the URL's bad token, not a 431
    assert json.loads(reply) == {"error": "Invalid callback credentials"}


async def test_headers_past_their_bound_are_refused_431(timed_gateway: ProcessServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_gateway.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=MARGIN_S)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert json.loads(body) == {"error": "Request headers larger than 65536 bytes"}
