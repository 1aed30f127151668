"""Unit tests of app.client (sync and async) and `imagehook generate`, over httpx.MockTransport."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import inspect
import io
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from app import client as client_module
from app.client import (
    AsyncImagehook,
    Imagehook,
    ImagehookError,
    WaitTimeoutError,
    WebhookVerificationError,
    verify_webhook,
)
from app.client.generate import CLEAR_LINE, Progress, add_generate_command

BASE = "http://gateway.test"
KEY = "ih_test-key"
Answer = tuple[int, Any] | Exception


class Script:
    """An httpx.MockTransport handler: answers in order (the last one repeats) and records every request."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, content=body) if isinstance(body, bytes) else httpx.Response(status, json=body)

    def params(self, name: str) -> list[str | None]:
        return [request.url.params.get(name) for request in self.requests]


def status(state: str, **fields: Any) -> dict[str, Any]:
    urls = ["https://cdn.test/0.png"] if state == "success" else []
    body = {"taskId": "ih_1", "state": state, "imageUrl": (urls or [None])[0], "imageUrls": urls, "failMsg": None}
    return body | {"costTime": None, "model": "nano-banana-pro", "createdAt": "t0", "updatedAt": "t1"} | fields


def ok(body: Any) -> Answer:
    return (200, body)


async def resolve(value: Any) -> Any:
    """The same test drives both clients: await the async client's results, take the sync one's as they are."""
    return await value if inspect.isawaitable(value) else value


Handler = Callable[[httpx.Request], httpx.Response]
Connect = Callable[[Handler], Any]


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """connect(handler) -> an Imagehook or AsyncImagehook whose requests `handler` answers."""
    async with contextlib.AsyncExitStack() as stack:

        def make(handler: Handler) -> Any:
            transport = httpx.MockTransport(handler)
            if request.param == "sync":
                return stack.enter_context(
                    Imagehook(BASE, KEY, http=stack.enter_context(httpx.Client(transport=transport)))
                )
            http = httpx.AsyncClient(transport=transport)
            stack.push_async_callback(http.aclose)
            return AsyncImagehook(BASE, KEY, http=http)

        yield make


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The mocks answer long-polls at once, which the client would otherwise space out by a second.
    monkeypatch.setattr(client_module, "MIN_POLL_INTERVAL_S", 0.0)


async def test_generate_sends_key_idempotency_key_and_only_given_fields(connect: Connect) -> None:
    script = Script(ok({"taskId": "ih_1"}))
    fields = dict(aspectRatio="16:9", imageInput=["https://in.test/a.png"], options={"quality": "high"}, seed=None)
    result = await resolve(connect(script).generate("a fox", model="m", idempotency_key="k-1", **fields))
    assert result == {"taskId": "ih_1"}
    (request,) = script.requests
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/api/images/generate")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] == "k-1"
    assert "prefer" not in request.headers
    assert json.loads(request.content) == {
        "prompt": "a fox",
        "model": "m",
        "aspectRatio": "16:9",
        "imageInput": ["https://in.test/a.png"],
        "options": {"quality": "high"},
    }


async def test_generate_without_key_sends_a_fresh_one_each_time(connect: Connect) -> None:
    script = Script(ok({"taskId": "ih_1"}))
    client = connect(script)
    for _ in range(2):
        await resolve(client.generate("a fox"))
    keys = [request.headers["idempotency-key"] for request in script.requests]
    assert keys[0] != keys[1] and all(uuid.UUID(key) for key in keys)
    assert json.loads(script.requests[0].content) == {"prompt": "a fox"}


async def test_generate_with_wait_sends_prefer_and_outwaits_the_hold(connect: Connect) -> None:
    script = Script(ok(status("success")))
    client = connect(script)
    assert (await resolve(client.generate("a fox", wait=30)))["state"] == "success"
    (request,) = script.requests
    assert request.headers["prefer"] == "wait=30"
    assert request.extensions["timeout"]["read"] == client.timeout + 30


async def test_status_sends_task_id_and_wait_as_query(connect: Connect) -> None:
    script = Script(ok(status("processing")))
    client = connect(script)
    assert await resolve(client.status("ih_1")) == status("processing")
    await resolve(client.status("ih_1", wait=12.5))
    assert [r.url.path for r in script.requests] == ["/api/images/status"] * 2
    assert script.params("taskId") == ["ih_1", "ih_1"]
    assert script.params("wait") == [None, "13"]
    assert script.requests[1].headers["authorization"] == f"Bearer {KEY}"
    assert script.requests[1].extensions["timeout"]["read"] == client.timeout + 12.5


@pytest.mark.parametrize(("cancel_after", "header"), [(90, "90"), (1.5, "1.5"), ("1h30m", "1h30m"), (None, None)])
async def test_generate_sends_cancel_after_as_given(connect: Connect, cancel_after: Any, header: str | None) -> None:
    script = Script(ok({"taskId": "ih_1"}))
    await resolve(connect(script).generate("a fox", cancel_after=cancel_after))
    (request,) = script.requests
    assert request.headers.get("cancel-after") == header
    assert json.loads(request.content) == {"prompt": "a fox"}


async def test_cancel_posts_and_returns_the_canceled_status(connect: Connect) -> None:
    gone = status("fail", failMsg="Canceled", failCode="canceled")
    script = Script(ok(gone))
    assert await resolve(connect(script).cancel("ih_1")) == gone
    (request,) = script.requests
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/api/images/tasks/ih_1/cancel")
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_cancel_of_a_finished_task_returns_its_status_and_other_errors_raise(connect: Connect) -> None:
    script = Script(
        (409, {"error": "Task has already finished", **status("success")}), (404, {"error": "Task not found"})
    )
    client = connect(script)
    assert await resolve(client.cancel("ih_1")) == status("success")
    with pytest.raises(ImagehookError) as caught:
        await resolve(client.cancel("ih_2"))
    assert (caught.value.status, caught.value.message) == (404, "Task not found")


async def test_a_cancel_is_retried_once_after_a_connection_error(connect: Connect) -> None:
    gone = status("fail", failMsg="Canceled", failCode="canceled")
    script = Script(httpx.ReadTimeout("slow"), ok(gone))
    assert await resolve(connect(script).cancel("ih_1")) == gone
    assert [request.url.path for request in script.requests] == ["/api/images/tasks/ih_1/cancel"] * 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((401, {"error": "Missing or invalid API key"}), "Missing or invalid API key"),
        (
            (409, {"error": "Idempotency-Key reused with a different body"}),
            "Idempotency-Key reused with a different body",
        ),
        ((502, b"Bad gateway"), "Bad gateway"),
    ],
)
async def test_error_answers_raise_with_status_and_server_text(connect: Connect, answer: Answer, message: str) -> None:
    script = Script(answer)
    with pytest.raises(ImagehookError) as caught:
        await resolve(connect(script).generate("a fox"))
    assert (caught.value.status, caught.value.message) == (answer[0], message)  # type: ignore[index]
    assert message in str(caught.value) and str(answer[0]) in str(caught.value)  # type: ignore[index]
    assert len(script.requests) == 1  # an HTTP answer is never retried


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_one_retry_after_a_connection_error_reuses_the_idempotency_key(
    connect: Connect, failure: Exception
) -> None:
    script = Script(failure, ok({"taskId": "ih_1"}))
    assert await resolve(connect(script).generate("a fox")) == {"taskId": "ih_1"}
    first, second = script.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.content == second.content


async def test_a_second_connection_error_is_raised(connect: Connect) -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok({"taskId": "ih_1"}))
    with pytest.raises(httpx.ConnectError):
        await resolve(connect(script).status("ih_1"))
    assert len(script.requests) == 2


async def test_wait_long_polls_and_reports_each_state_change(connect: Connect) -> None:
    states = ["pending", "pending", "processing", "processing", "success"]
    script = Script(*(ok(status(state)) for state in states))
    updates: list[str] = []
    result = await resolve(connect(script).wait("ih_1", on_update=lambda s: updates.append(s["state"])))
    assert result == status("success")
    assert updates == ["pending", "processing", "success"]
    # The first read is immediate; then each long-poll asks for min(60, time left).
    assert script.params("wait") == [None, "60", "60", "60", "60"]


async def test_wait_asks_for_no_more_than_the_time_left_and_returns_a_failure(connect: Connect) -> None:
    script = Script(ok(status("pending")), ok(status("fail", failMsg="nope")))
    result = await resolve(connect(script).wait("ih_1", timeout=5))
    assert (result["state"], result["failMsg"]) == ("fail", "nope")
    assert script.params("wait") == [None, "5"]


async def test_wait_raises_timeout_with_the_last_status(connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MIN_POLL_INTERVAL_S", 0.05)
    script = Script(ok(status("processing")))
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as caught:
        await resolve(connect(script).wait("ih_1", timeout=0.3))
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last_status["state"] == "processing"
    assert 0.3 <= time.monotonic() - started < 2


async def test_wait_spaces_polls_when_the_server_does_not_hold_them(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MIN_POLL_INTERVAL_S", 0.2)
    script = Script(*(ok(status(state)) for state in ["pending", "pending", "pending", "success"]))
    await resolve(connect(script).wait("ih_1"))
    gaps = [later - earlier for earlier, later in zip(script.times, script.times[1:], strict=False)]
    assert gaps[0] < 0.15  # straight from the first read to the first long-poll
    assert all(gap >= 0.19 for gap in gaps[1:])


async def test_download_follows_redirects_and_never_sends_the_api_key(connect: Connect) -> None:
    seen: list[httpx.Request] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/a.png":
            return httpx.Response(302, headers={"location": "https://cdn.test/b.png"})
        return httpx.Response(200, content=b"\x89PNG image") if request.url.path == "/b.png" else httpx.Response(404)

    client = connect(cdn)
    assert await resolve(client.download("https://cdn.test/a.png")) == b"\x89PNG image"
    assert [r.url.path for r in seen] == ["/a.png", "/b.png"]
    assert all("authorization" not in r.headers for r in seen)
    with pytest.raises(ImagehookError) as caught:
        await resolve(client.download("https://cdn.test/gone.png"))
    assert caught.value.status == 404


def test_a_borrowed_http_client_stays_open() -> None:
    with httpx.Client(transport=httpx.MockTransport(Script(ok({})))) as http:
        with Imagehook(BASE, KEY, http=http):
            pass
        assert not http.is_closed


# Webhooks (Standard Webhooks)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps(status("success") | {"type": "task.succeeded"}).encode()
NOW = 1_800_000_000


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(signature: str | None = None, timestamp: int = NOW, webhook_id: str = "msg_1") -> dict[str, str]:
    signature = signature or sign(SECRET, webhook_id, timestamp, BODY)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_webhook_with_a_valid_signature_returns_its_body() -> None:
    assert verify_webhook(SECRET, webhook_headers(), BODY, now=NOW) == json.loads(BODY)
    assert verify_webhook(SECRET, webhook_headers(), BODY.decode(), now=NOW + 299)["type"] == "task.succeeded"


def test_webhook_headers_are_matched_case_insensitively() -> None:
    mixed = {name.title(): value for name, value in webhook_headers().items()}
    assert verify_webhook(SECRET, mixed, BODY, now=NOW)["taskId"] == "ih_1"
    assert verify_webhook(SECRET, httpx.Headers(mixed), BODY, now=NOW)["taskId"] == "ih_1"


def test_any_one_matching_signature_is_enough() -> None:
    """During a rotation the server signs with the old and the new secret; either side must accept."""
    old_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    both = f"{sign(old_secret, 'msg_1', NOW, BODY)} {sign(SECRET, 'msg_1', NOW, BODY)}"
    for secret in (SECRET, old_secret):
        assert verify_webhook(secret, webhook_headers(both), BODY, now=NOW)["taskId"] == "ih_1"
    good = sign(SECRET, "msg_1", NOW, BODY)
    assert verify_webhook(SECRET, webhook_headers(f"v2,{good[3:]} {good}"), BODY, now=NOW)


@pytest.mark.parametrize(
    ("secret", "headers", "body", "now"),
    [
        pytest.param(SECRET, webhook_headers(), BODY.replace(b"success", b"fail"), NOW, id="tampered body"),
        pytest.param(
            "whsec_" + base64.b64encode(b"another secret").decode(), webhook_headers(), BODY, NOW, id="secret"
        ),
        pytest.param(SECRET, webhook_headers(), BODY, NOW + 301, id="stale timestamp"),
        pytest.param(SECRET, webhook_headers(), BODY, NOW - 301, id="future timestamp"),
        pytest.param(SECRET, webhook_headers(webhook_id="msg_2") | {"webhook-id": "msg_1"}, BODY, NOW, id="other id"),
        pytest.param(SECRET, webhook_headers("v1,AAAA v1,BBBB"), BODY, NOW, id="no signature matches"),
        pytest.param(SECRET, webhook_headers(timestamp="soon"), BODY, NOW, id="timestamp not a number"),  # type: ignore[arg-type]
        pytest.param(SECRET, {"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}, BODY, NOW, id="no signature"),
    ],
)
def test_webhook_that_does_not_check_out_is_rejected(secret: str, headers: dict, body: bytes, now: int) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body, now=now)
    assert issubclass(WebhookVerificationError, ValueError)


def test_a_signature_made_by_the_standardwebhooks_package_is_accepted() -> None:
    sent_at = datetime.now(UTC)
    signature = Webhook(SECRET).sign("msg_9", sent_at, BODY.decode())
    headers = webhook_headers(signature, timestamp=int(sent_at.timestamp()), webhook_id="msg_9")
    assert verify_webhook(SECRET, headers, BODY) == json.loads(BODY)
    # And the reference implementation agrees with this file's signer, which the tests above rely on.
    assert Webhook(SECRET).verify(BODY, webhook_headers(timestamp=int(time.time()))) == json.loads(BODY)


# The `generate` command


class FakeGateway:
    """Answers generate, status (one state per read, the last repeating) and image downloads."""

    def __init__(self, *states: str, fail_msg: str | None = None, error: Answer | None = None) -> None:
        urls = ["https://cdn.test/0.png", "https://cdn.test/1.png"]
        self.statuses = [status(s, imageUrl=urls[0], imageUrls=urls) if s == "success" else status(s) for s in states]
        self.statuses[-1] |= {"failMsg": fail_msg} if fail_msg else {}
        self.generate = Script(error or ok({"taskId": "ih_1"}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/images/generate":
            return self.generate(request)
        if request.url.path == "/api/images/status":
            return httpx.Response(200, json=self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])
        return httpx.Response(200, content=f"image {request.url.path}".encode())


def run_cli(argv: list[str], handler: Handler) -> tuple[int, list[str]]:
    """Parse `imagehook generate ...` and run it against `handler`: (exit code, [url, key] it connected with)."""
    parser = argparse.ArgumentParser(prog="imagehook")
    add_generate_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["generate", *argv])
    connected: list[str] = []
    with contextlib.ExitStack() as stack:

        def connect(url: str, key: str) -> Imagehook:
            connected.extend([url, key])
            return Imagehook(url, key, http=stack.enter_context(httpx.Client(transport=httpx.MockTransport(handler))))

        try:
            args.run(args, connect=connect)
        except SystemExit as exc:
            return int(exc.code or 0), connected
    return 0, connected


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("IMAGEHOOK_KEY", KEY)
    monkeypatch.delenv("IMAGEHOOK_URL", raising=False)
    return monkeypatch


def test_cli_submits_the_fields_and_prints_only_the_task_id(env: pytest.MonkeyPatch, capsys) -> None:
    env.setenv("IMAGEHOOK_URL", BASE)
    gateway = FakeGateway("pending")
    argv = ["a fox", "--model", "m", "--aspect-ratio", "16:9", "--num-images", "2", "--image", "https://a", "https://b"]
    assert run_cli(argv, gateway) == (0, [BASE, KEY])
    assert capsys.readouterr() == ("ih_1\n", "")
    (request,) = gateway.generate.requests
    assert json.loads(request.content) == {
        "prompt": "a fox",
        "model": "m",
        "aspectRatio": "16:9",
        "numImages": 2,
        "imageInput": ["https://a", "https://b"],
    }


def test_cli_sends_cancel_after(env: pytest.MonkeyPatch, capsys) -> None:
    gateway = FakeGateway("pending")
    assert run_cli(["a fox", "--cancel-after", "5m"], gateway)[0] == 0
    (request,) = gateway.generate.requests
    assert request.headers["cancel-after"] == "5m"


def test_cli_without_a_key_exits_2(env: pytest.MonkeyPatch, capsys) -> None:
    env.delenv("IMAGEHOOK_KEY")
    assert run_cli(["a fox"], FakeGateway("pending")) == (2, [])
    assert "IMAGEHOOK_KEY" in capsys.readouterr().err


def test_cli_wait_shows_each_state_then_the_urls(env: pytest.MonkeyPatch, capsys) -> None:
    code, connected = run_cli(
        ["a fox", "--wait", "--key", "other-key"], FakeGateway("pending", "processing", "success")
    )
    assert (code, connected) == (0, ["http://127.0.0.1:8000", "other-key"])
    out, err = capsys.readouterr()
    assert out.splitlines() == ["ih_1", "https://cdn.test/0.png", "https://cdn.test/1.png"]
    assert re.fullmatch(r"  pending  \d+\.\ds\n  processing  \d+\.\ds\n  success  \d+\.\ds\n", err)


def test_cli_out_saves_every_image(env: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    assert run_cli(["a fox", "--out", str(out)], FakeGateway("processing", "success"))[0] == 0
    assert out.read_bytes() == b"image /0.png"
    assert (tmp_path / "fox-2.png").read_bytes() == b"image /1.png"
    assert capsys.readouterr().out.splitlines()[-2:] == [str(out), str(tmp_path / "fox-2.png")]


def test_cli_task_failure_exits_1_with_the_fail_message(env: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    gateway = FakeGateway("pending", "fail", fail_msg="Content policy violation")
    assert run_cli(["a fox", "--out", str(tmp_path / "x.png")], gateway)[0] == 1
    assert "Content policy violation" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ((401, {"error": "Missing or invalid API key"}), "Missing or invalid API key"),
        (httpx.ConnectError("connection refused"), "request failed: ConnectError: connection refused"),
    ],
)
def test_cli_http_and_connection_errors_exit_2(env: pytest.MonkeyPatch, capsys, error: Answer, text: str) -> None:
    assert run_cli(["a fox", "--wait"], FakeGateway("pending", error=error))[0] == 2
    assert text in capsys.readouterr().err


def test_cli_wait_timeout_exits_1(env: pytest.MonkeyPatch, capsys) -> None:
    assert run_cli(["a fox", "--wait", "--timeout", "0"], FakeGateway("processing"))[0] == 1
    assert "still processing" in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_spins_in_place_and_clears_its_line() -> None:
    terminal = FakeTerminal()
    with Progress(terminal, time.monotonic()) as progress:
        progress.update(status("pending"))
        time.sleep(0.35)
        progress.update(status("success"))
    text = terminal.getvalue()
    assert text.startswith(f"{CLEAR_LINE}  pending  0.0s\n")
    assert re.search(r"\r[|/\\-] pending  0\.\ds", text)
    assert f"{CLEAR_LINE}  success  0." in text
    assert text.endswith(CLEAR_LINE)
