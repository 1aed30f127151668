"""Outbound connections go only to the address that was checked, end to end: real uvicorn servers on
loopback stand behind made-up names, which a scripted resolver answers for (tests/support/resolvers.py)."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.outbox.outbound import DestinationRefused, pinned_client, webhook_policy
from tests.e2e.test_e2e_copies import PNG, copy_once
from tests.e2e.test_e2e_webhooks import settled, statuses, submit, wait_for_delivery
from tests.support.gateways import ClientOf, Emulator, StartGateway, StartServer
from tests.support.resolvers import Scripted
from tests.support.servers import ThreadServer

PUBLIC = "93.184.215.14"


def refused(host: str) -> str:
    return f"refused to connect to {host} (127.0.0.1): not a public address"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    host: str  # the Host header


class Recorder:
    """A server on 127.0.0.1, the private destination to protect: records every request it gets and
    answers a PNG to GET, 200 to POST, and a redirect to `?to=` at /moved."""

    def __init__(self, tls: trustme.LeafCert | None = None) -> None:
        self.requests: list[Seen] = []
        self.server_names: list[str | None] = []  # the SNI of each TLS handshake
        self.server = ThreadServer(Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "POST"])]))
        self.port = self.server.port
        if tls is not None:
            self.server.server.config.ssl_context_factory = lambda config, default: self.tls_context(tls)

    async def answer(self, request: Request) -> Response:
        self.requests.append(Seen(request.method, request.url.path, request.headers["host"]))
        if request.url.path == "/moved":
            return Response(status_code=302, headers={"location": request.query_params["to"]})
        if request.method == "GET":
            return Response(PNG, media_type="image/png")
        return Response("ok")

    def tls_context(self, leaf: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        context.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
        return context


StartRecorder = Callable[..., Awaitable[Recorder]]


@pytest.fixture
def start_recorder(start_server: StartServer) -> StartRecorder:
    async def start(tls: trustme.LeafCert | None = None) -> Recorder:
        recorder = Recorder(tls)
        await start_server(recorder.server)
        return recorder

    return start


@pytest.fixture
async def recorder(start_recorder: StartRecorder) -> Recorder:
    return await start_recorder()


# --- the pinned client -----------------------------------------------------------------------------


async def test_the_connection_goes_to_the_checked_address_under_the_urls_host(recorder: Recorder) -> None:
    resolver = Scripted({"hook.test": [["127.0.0.1"]]})
    async with pinned_client(webhook_policy(True), resolver) as http:
        response = await http.post(f"http://hook.test:{recorder.port}/hook", content=b"{}")
    assert response.status_code == 200
    assert recorder.requests == [Seen("POST", "/hook", f"hook.test:{recorder.port}")]
    assert resolver.lookups == {"hook.test": 1}

    async with pinned_client(webhook_policy(False), resolver) as http:
        with pytest.raises(DestinationRefused, match=r"hook\.test \(127\.0\.0\.1\): not a public address"):
            await http.post(f"http://hook.test:{recorder.port}/hook", content=b"{}")
    assert len(recorder.requests) == 1


async def test_the_next_checked_address_is_tried_when_one_takes_no_connection(recorder: Recorder) -> None:
    resolver = Scripted({"hook.test": [["127.0.0.2", "127.0.0.1"]]})  # nothing listens on 127.0.0.2
    async with pinned_client(webhook_policy(True), resolver) as http:
        assert (await http.get(f"http://hook.test:{recorder.port}/a.png")).content == PNG
    assert recorder.requests == [Seen("GET", "/a.png", f"hook.test:{recorder.port}")]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_names_and_verifies_the_urls_host_not_the_address(
    ca: trustme.CA, start_recorder: StartRecorder
) -> None:
    recorder = await start_recorder(tls=ca.issue_cert("hook.test"))
    resolver = Scripted({"hook.test": [["127.0.0.1"]]})
    async with pinned_client(webhook_policy(True), resolver, verify=trusting(ca)) as http:
        response = await http.get(f"https://hook.test:{recorder.port}/a.png")
    assert response.status_code == 200 and response.content == PNG
    assert recorder.server_names == ["hook.test"]
    assert recorder.requests == [Seen("GET", "/a.png", f"hook.test:{recorder.port}")]


async def test_a_certificate_for_another_name_fails_verification(ca: trustme.CA, start_recorder: StartRecorder) -> None:
    recorder = await start_recorder(tls=ca.issue_cert("other.test"))
    resolver = Scripted({"hook.test": [["127.0.0.1"]]})
    async with pinned_client(webhook_policy(True), resolver, verify=trusting(ca)) as http:
        with pytest.raises(httpx.ConnectError, match="certificate is not valid for 'hook.test'"):
            await http.get(f"https://hook.test:{recorder.port}/a.png")
    assert recorder.server_names == ["hook.test"]
    assert recorder.requests == []


# --- webhooks and copies --------------------------------------------------------------------------


async def test_a_webhook_host_that_rebinds_after_the_submit_check_is_refused_where_it_connects(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator, recorder: Recorder
) -> None:
    resolver = Scripted({"hook.test": [[PUBLIC], ["127.0.0.1"]]})
    gateway = await start_gateway(resolver=resolver, webhook_retry_base_s=0.2)
    assert not gateway.settings.webhook_allow_private
    await kie.set_faults(generate_s=0.1)
    async with client_of(gateway) as http:
        task_id = await submit(http, f"http://hook.test:{recorder.port}/hook")  # the check saw PUBLIC
        delivery = await wait_for_delivery(http, task_id, settled("failed"))
    assert (delivery["attempts"], statuses(delivery), delivery["nextAttemptAt"]) == (1, [None], None)
    assert delivery["lastError"] == "DestinationRefused: " + refused("hook.test")
    assert delivery["attemptLog"][0]["error"] == delivery["lastError"]
    assert recorder.requests == []
    assert resolver.lookups["hook.test"] == 2  # the submit check, then the one connection


async def test_a_copy_from_an_allowlisted_name_with_a_private_answer_is_refused(
    database_url: str, sessions: Any, recorder: Recorder
) -> None:
    resolver = Scripted({"cdn.kie.test": [[PUBLIC, "127.0.0.1"]]})
    url = f"http://cdn.kie.test:{recorder.port}/a.png"
    row, _ = await copy_once(database_url, sessions, url, resolver=resolver, fetch_allowed_hosts=("*.kie.test",))
    assert (row.state, row.attempts, row.next_attempt_at, row.storage_key) == ("failed", 1, None, None)
    assert row.error == refused("cdn.kie.test")
    assert recorder.requests == []
    assert resolver.lookups == {"cdn.kie.test": 1}


async def test_an_allowlisted_ip_literal_does_not_admit_names_that_resolve_to_it(
    database_url: str, sessions: Any, recorder: Recorder
) -> None:
    resolver = Scripted({"cdn.kie.test": [["127.0.0.1"]]})
    allowed = {"fetch_allowed_hosts": ("*.kie.test", "127.0.0.1")}
    direct = f"http://127.0.0.1:{recorder.port}/a.png"
    row, _ = await copy_once(database_url, sessions, direct, resolver=resolver, **allowed)
    assert (row.state, row.size) == ("stored", len(PNG))

    moved = f"http://127.0.0.1:{recorder.port}/moved?to=http://cdn.kie.test:{recorder.port}/b.png"
    row, _ = await copy_once(database_url, sessions, moved, resolver=resolver, **allowed)
    assert (row.state, row.error) == ("failed", refused("cdn.kie.test"))
    assert [seen.path for seen in recorder.requests] == ["/a.png", "/moved"]
