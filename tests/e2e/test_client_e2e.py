"""End to end: app.client and `imagehook generate` against a real gateway and the Kie.ai emulator."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.client import AsyncImagehook, ImagehookError
from app.client.generate import add_generate_command
from tests.support.gateways import Emulator, Gateway
from tests.support.waiting import wait_until

MakeKey = Callable[[str], Awaitable[str]]


@pytest.fixture
async def status_reads() -> list[httpx.Request]:
    return []


@pytest.fixture
async def hook(gateway: Gateway, make_key: MakeKey, status_reads: list[httpx.Request]) -> AsyncIterator[AsyncImagehook]:
    """A client of the gateway with a fresh key, whose status reads are recorded in `status_reads`."""

    async def record(request: httpx.Request) -> None:
        if request.url.path == "/api/images/status":
            status_reads.append(request)

    async with (
        httpx.AsyncClient(event_hooks={"request": [record]}) as http,
        AsyncImagehook(gateway.url, await make_key("sdk"), http=http) as client,
    ):
        yield client


async def test_generate_then_wait_long_polls_to_success(
    hook: AsyncImagehook, kie: Emulator, status_reads: list[httpx.Request]
) -> None:
    await kie.set_faults(generate_s=1.5)
    task_id = (await hook.generate("a lighthouse at dawn", aspectRatio="1:1"))["taskId"]
    updates: list[str] = []
    status = await hook.wait(task_id, timeout=20, on_update=lambda s: updates.append(s["state"]))
    assert status["taskId"] == task_id and status["state"] == "success"
    assert status["imageUrl"] == status["imageUrls"][0]
    assert updates[0] in {"pending", "processing"} and updates[-1] == "success"
    # One immediate read, then one long-poll the gateway answers when the callback lands: no polling loop.
    assert [r.url.params.get("wait") for r in status_reads] == [None, "20"]


async def test_prefer_wait_and_status_wait_answer_when_the_task_finishes(hook: AsyncImagehook, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.5)
    started = time.monotonic()
    status = await hook.generate("a red fox", wait=20)
    assert status["state"] == "success" and status["imageUrls"]
    assert time.monotonic() - started < 10

    pending = (await hook.generate("a blue fox"))["taskId"]
    started = time.monotonic()
    assert (await hook.status(pending, wait=20))["state"] == "success"
    assert time.monotonic() - started < 10


async def test_idempotency_key_and_errors_come_through_the_client(
    hook: AsyncImagehook, gateway: Gateway, kie: Emulator
) -> None:
    await kie.set_faults(generate_s=60)
    first = await hook.generate("a red fox", idempotency_key="order-7")
    assert await hook.generate("a red fox", idempotency_key="order-7") == first
    with pytest.raises(ImagehookError) as conflict:
        await hook.generate("a blue fox", idempotency_key="order-7")
    assert conflict.value.status == 409 and "Idempotency-Key" in conflict.value.message
    with pytest.raises(ImagehookError) as missing:
        await hook.status("ih_nope")
    assert (missing.value.status, missing.value.message) == (404, "Task not found")
    async with AsyncImagehook(gateway.url, "ih_wrong") as stranger:
        with pytest.raises(ImagehookError) as unauthorized:
            await stranger.generate("a red fox")
    assert (unauthorized.value.status, unauthorized.value.message) == (401, "Missing or invalid API key")


async def test_download_writes_a_real_png(hook: AsyncImagehook, kie: Emulator, tmp_path: Path) -> None:
    await kie.set_faults(generate_s=0.2)
    task_id = (await hook.generate("a lighthouse", aspectRatio="1:1", outputFormat="png"))["taskId"]
    status = await hook.wait(task_id, timeout=20)
    path = tmp_path / "lighthouse.png"
    path.write_bytes(await hook.download(status["imageUrl"]))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == image.height


async def test_download_of_imagehooks_own_copy_sends_the_key(hook: AsyncImagehook, kie: Emulator) -> None:
    await kie.set_faults(generate_s=0.2)
    task_id = (await hook.generate("a lighthouse", outputFormat="png"))["taskId"]
    await hook.wait(task_id, timeout=20)
    status = await wait_until(lambda: hook.status(task_id), lambda s: s["expiresAt"] is None)
    assert status["imageUrl"].startswith(f"{hook.base_url}/api/images/")
    assert (await hook.download(status["imageUrl"])).startswith(b"\x89PNG")


async def test_cancel_and_cancel_after_through_the_client(hook: AsyncImagehook, kie: Emulator) -> None:
    await kie.set_faults(generate_s=600)
    task_id = (await hook.generate("a red fox"))["taskId"]
    canceled = await hook.cancel(task_id)
    assert (canceled["state"], canceled["failMsg"], canceled["failCode"]) == ("fail", "Canceled", "canceled")
    assert await hook.cancel(task_id) == canceled == await hook.status(task_id)
    late = (await hook.generate("a red fox", cancel_after=1))["taskId"]
    status = await hook.wait(late, timeout=20)
    assert (status["state"], status["failMsg"], status["failCode"]) == ("fail", "Deadline passed", "canceled")
    await kie.set_faults(generate_s=0.1)
    done = await hook.generate("a red fox", wait=20)
    assert done["state"] == "success" and await hook.cancel(done["taskId"]) == await hook.status(done["taskId"])
    with pytest.raises(ImagehookError) as caught:
        await hook.generate("a red fox", cancel_after="soon")
    assert caught.value.status == 400 and caught.value.message.startswith("Cancel-After must be")


def run_generate_command(argv: list[str]) -> int:
    """`imagehook generate ...` as the real CLI runs it (no seam): its exit code."""
    parser = argparse.ArgumentParser(prog="imagehook")
    add_generate_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["generate", *argv])
    try:
        args.run(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_cli_generate_out_writes_every_image(
    gateway: Gateway, make_key: MakeKey, kie: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await kie.set_faults(generate_s=0.3)
    out = tmp_path / "robots.png"
    model = ["--model", "bytedance/seedream-v4-text-to-image", "--num-images", "2"]
    argv = ["two robots playing chess", *model, "--out", str(out), "--url", gateway.url, "--key", await make_key("cli")]
    assert await asyncio.to_thread(run_generate_command, argv) == 0
    stdout, stderr = capsys.readouterr()
    lines = stdout.splitlines()
    assert lines[0].startswith("ih_") and lines[-2:] == [str(out), str(tmp_path / "robots-2.png")]
    assert "  success  " in stderr
    for path in (out, tmp_path / "robots-2.png"):
        with Image.open(path) as image:
            assert image.format == "PNG"


async def test_cli_reports_a_failed_task_with_exit_code_1(
    gateway: Gateway, make_key: MakeKey, kie: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await kie.set_faults(generate_s=0.2, fail_rate=1.0, fail_msg="Content policy violation")
    argv = ["a fox", "--wait", "--url", gateway.url, "--key", await make_key("cli")]
    assert await asyncio.to_thread(run_generate_command, argv) == 1
    assert "Content policy violation" in capsys.readouterr().err
